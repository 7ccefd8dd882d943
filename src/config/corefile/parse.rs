//! The Corefile's syntax (CoreDNS's dialect of the Caddyfile): server blocks of one or more
//! keys followed by `{ ... }`, each holding one directive a line, a directive optionally
//! followed by a block of its own. Tokens are separated by blanks; `#` starts a comment;
//! `"..."` and `` `...` `` quote a token; `{$NAME}` is replaced by the environment variable.
//! Only syntax here: what the directives mean is [`super::map`]'s business.

use super::CorefileError;

/// One server block: `cluster.local:53 in-addr.arpa:53 { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerBlock {
    pub keys: Vec<String>,
    pub line: usize,
    pub directives: Vec<Directive>,
}

/// A directive (a plugin or one of a plugin's options) with its arguments and, if given,
/// its own block.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Vec<Directive>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    text: String,
    line: usize,
    /// The first token of its line (directives start a line).
    starts_line: bool,
    quoted: bool,
}

/// Parses a whole Corefile. `env` resolves `{$NAME}` (CoreDNS reads the environment).
pub fn parse(file: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<ServerBlock>, CorefileError> {
    let tokens = tokenize(file, text, env)?;
    let mut parser = Parser { file, tokens: &tokens, at: 0 };
    let mut blocks = Vec::new();
    while parser.at < tokens.len() {
        blocks.push(parser.server_block()?);
    }
    Ok(blocks)
}

struct Parser<'a> {
    file: &'a str,
    tokens: &'a [Token],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, line: usize, message: impl Into<String>) -> CorefileError {
        CorefileError::Syntax { file: self.file.to_string(), line, message: message.into() }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn is_open(token: &Token) -> bool {
        !token.quoted && token.text == "{"
    }

    fn is_close(token: &Token) -> bool {
        !token.quoted && token.text == "}"
    }

    fn server_block(&mut self) -> Result<ServerBlock, CorefileError> {
        let first = &self.tokens[self.at];
        let line = first.line;
        let mut keys = Vec::new();
        while let Some(token) = self.peek() {
            if Self::is_open(token) {
                break;
            }
            if Self::is_close(token) {
                return Err(self.error(token.line, "`}` without a block to close"));
            }
            if !keys.is_empty() && token.starts_line && !keys.last().is_some_and(|k: &String| k.ends_with(',')) {
                return Err(self.error(token.line, format!("server block `{}` has no `{{`", keys.join(" "))));
            }
            keys.extend(token.text.split(',').filter(|k| !k.is_empty()).map(str::to_string));
            self.at += 1;
        }
        if keys.is_empty() {
            return Err(self.error(line, "a server block needs at least one zone before `{`"));
        }
        if keys.first().is_some_and(|k| k.starts_with('(')) {
            return Err(self.error(line, "snippets `(name) { }` and `import` are not supported: write the directives in each block"));
        }
        let Some(open) = self.peek() else {
            return Err(self.error(line, format!("server block `{}` has no `{{`", keys.join(" "))));
        };
        let open_line = open.line;
        self.at += 1;
        let directives = self.directives(open_line)?;
        Ok(ServerBlock { keys, line, directives })
    }

    /// Directives up to the `}` closing the block opened on `open_line`.
    fn directives(&mut self, open_line: usize) -> Result<Vec<Directive>, CorefileError> {
        let mut out = Vec::new();
        loop {
            let Some(token) = self.peek().cloned() else {
                return Err(self.error(open_line, "the `{` opened here is never closed"));
            };
            if Self::is_close(&token) {
                self.at += 1;
                return Ok(out);
            }
            if Self::is_open(&token) {
                return Err(self.error(token.line, "`{` where a directive was expected"));
            }
            self.at += 1;
            let mut directive = Directive { name: token.text.clone(), args: Vec::new(), block: Vec::new(), line: token.line };
            while let Some(next) = self.peek() {
                if next.starts_line || Self::is_close(next) {
                    break;
                }
                if Self::is_open(next) {
                    let line = next.line;
                    self.at += 1;
                    directive.block = self.directives(line)?;
                    break;
                }
                directive.args.push(next.text.clone());
                self.at += 1;
            }
            out.push(directive);
        }
    }
}

fn tokenize(file: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Token>, CorefileError> {
    let error = |line: usize, message: String| CorefileError::Syntax { file: file.to_string(), line, message };
    let mut tokens = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let mut chars = raw.chars().peekable();
        let mut starts_line = true;
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(&c) = chars.peek() else { break };
            if c == '#' {
                break;
            }
            let mut text = String::new();
            let quoted = c == '"' || c == '`';
            if quoted {
                chars.next();
                let mut closed = false;
                while let Some(ch) = chars.next() {
                    match ch {
                        '\\' if c == '"' && chars.peek() == Some(&'"') => text.push(chars.next().unwrap_or('"')),
                        ch if ch == c => {
                            closed = true;
                            break;
                        }
                        ch => text.push(ch),
                    }
                }
                if !closed {
                    return Err(error(line, format!("unterminated quote {c}")));
                }
            } else {
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() {
                        break;
                    }
                    text.push(ch);
                    chars.next();
                }
                // A brace glued to a word (`cluster.local:53{`) is still a brace.
                if text.len() > 1 && text.ends_with('{') && !text.ends_with("}{") && !text.contains("{$") {
                    text.pop();
                    tokens.push(Token { text: expand_env(&text, line, file, env)?, line, starts_line, quoted });
                    starts_line = false;
                    text = "{".into();
                }
            }
            let text = if quoted { text } else { expand_env(&text, line, file, env)? };
            tokens.push(Token { text, line, starts_line, quoted });
            starts_line = false;
        }
    }
    Ok(tokens)
}

/// Replaces each `{$NAME}` (and CoreDNS's older `{%NAME%}`) by the variable's value.
fn expand_env(text: &str, line: usize, file: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, CorefileError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{$").or_else(|| rest.find("{%")) {
        let close = if rest[start..].starts_with("{$") { "}" } else { "%}" };
        let Some(len) = rest[start + 2..].find(close) else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        let value = env(name).ok_or_else(|| CorefileError::Syntax {
            file: file.to_string(),
            line,
            message: format!("environment variable `{name}` is not set"),
        })?;
        out.push_str(&rest[..start]);
        out.push_str(&value);
        rest = &rest[start + 2 + len + close.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<ServerBlock> {
        parse("Corefile", text, &|name| (name == "UPSTREAM").then(|| "10.0.0.1".to_string())).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        parse("Corefile", text, &|_| None).unwrap_err().to_string()
    }

    #[test]
    fn blocks_directives_and_nested_blocks_keep_their_lines() {
        let blocks = parsed(
            "# comment\ncluster.local:53 in-addr.arpa:53 {\n    errors\n    cache {\n        success 9984 30 # cap\n        denial 9984 5\n    }\n    forward . 10.0.0.10 {\n        force_tcp\n    }\n}\n.:53 {\n  forward . {$UPSTREAM}\n}\n",
        );
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].keys, ["cluster.local:53", "in-addr.arpa:53"]);
        assert_eq!(blocks[0].line, 2);
        let cache = &blocks[0].directives[1];
        assert_eq!((cache.name.as_str(), cache.line), ("cache", 4));
        assert_eq!(cache.block[0].args, ["9984", "30"]);
        assert_eq!(cache.block[1].line, 6);
        assert_eq!(blocks[0].directives[2].args, [".", "10.0.0.10"]);
        assert_eq!(blocks[0].directives[2].block[0].name, "force_tcp");
        assert_eq!(blocks[1].directives[0].args, [".", "10.0.0.1"]);
    }

    #[test]
    fn keys_may_be_separated_by_commas_and_braces_may_touch_words() {
        let blocks = parsed("a.example, b.example:53{\n log\n}\n");
        assert_eq!(blocks[0].keys, ["a.example", "b.example:53"]);
        assert_eq!(blocks[0].directives[0].name, "log");
    }

    #[test]
    fn quoted_tokens_keep_blanks_and_are_never_braces() {
        let blocks = parsed(".:53 {\n hosts {\n   \"10.0.0.1 db.example\"\n   `{`\n }\n}\n");
        assert_eq!(blocks[0].directives[0].block[0].name, "10.0.0.1 db.example");
        assert_eq!(blocks[0].directives[0].block[1].name, "{");
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        assert_eq!(error(".:53 {\n  log\n"), "Corefile:1: the `{` opened here is never closed");
        assert_eq!(error(".:53 {\n}\n}\n"), "Corefile:3: `}` without a block to close");
        assert_eq!(error(".:53 {\n forward . {$NOPE}\n}\n"), "Corefile:2: environment variable `NOPE` is not set");
        assert_eq!(error(".:53\nlog\n"), "Corefile:2: server block `.:53` has no `{`");
        assert!(error("(common) {\n log\n}\n").starts_with("Corefile:1: snippets"));
    }
}
