//! What a pod's C library sends for one lookup: the names of its search walk, in order,
//! the query types per name and how they go out, and when the walk stops. Modelled on
//! glibc's `__res_context_search` and musl's `name_from_dns_search`, checked against real
//! glibc in `tests/diagnostics.rs`.

use crate::config::resolv_conf::ResolvConf;
use crate::wire::{Rcode, RecordType};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Libc {
    Glibc,
    Musl,
}

/// How the queries of one step leave the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sending {
    /// All types at once on one UDP socket (glibc's default, musl always).
    Parallel,
    /// One after the other, the next after the previous answer (`single-request`).
    Sequential,
    /// One after the other on a new socket each (`single-request-reopen`).
    SequentialReopen,
}

/// The outcome of one step of the walk, from the answers to its queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// At least one query got records: the lookup is done.
    Answer,
    NoData,
    NxDomain,
    ServFail,
    /// REFUSED, NOTIMP, FORMERR and the like.
    OtherError,
    /// No answer within timeout x attempts.
    Timeout,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Answer => "answer",
            StepOutcome::NoData => "NODATA",
            StepOutcome::NxDomain => "NXDOMAIN",
            StepOutcome::ServFail => "SERVFAIL",
            StepOutcome::OtherError => "error (REFUSED or the like)",
            StepOutcome::Timeout => "timeout",
        }
    }

    /// Combines the answers to one step's queries (rcode and answer count, or `None` for no
    /// answer at all) the way glibc's `__res_context_query` does for A and AAAA.
    pub fn of(answers: &[Option<(Rcode, u16)>]) -> StepOutcome {
        if answers.iter().flatten().any(|&(rcode, count)| rcode == Rcode::NOERROR && count > 0) {
            return StepOutcome::Answer;
        }
        // glibc waits for every answer of the step, retrying the step as a whole.
        if answers.iter().any(Option::is_none) {
            return StepOutcome::Timeout;
        }
        // The first query's rcode decides, unless it is NOERROR (NODATA): then the next one's.
        let rcode = answers.iter().flatten().map(|&(rcode, _)| rcode).find(|&rcode| rcode != Rcode::NOERROR).unwrap_or(Rcode::NOERROR);
        match rcode {
            Rcode::NOERROR => StepOutcome::NoData,
            Rcode::NXDOMAIN => StepOutcome::NxDomain,
            Rcode::SERVFAIL => StepOutcome::ServFail,
            _ => StepOutcome::OtherError,
        }
    }
}

/// One lookup as a libc performs it.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub libc: Libc,
    /// The fully qualified names tried, in order, each ending with a dot.
    pub candidates: Vec<String>,
    pub types: Vec<RecordType>,
    pub sending: Sending,
    pub tcp: bool,
}

impl Lookup {
    /// The walk for `name` under `conf`. `types`: what the application asks for (A and AAAA
    /// for `getaddrinfo` with `AF_UNSPEC`); `no-aaaa` drops AAAA for glibc.
    pub fn plan(libc: Libc, conf: &ResolvConf, name: &str, types: &[RecordType]) -> Lookup {
        let mut types = types.to_vec();
        if libc == Libc::Glibc && conf.no_aaaa && types.contains(&RecordType::A) {
            types.retain(|&t| t != RecordType::AAAA);
        }
        let sending = match libc {
            Libc::Musl => Sending::Parallel,
            Libc::Glibc if conf.single_request_reopen => Sending::SequentialReopen,
            Libc::Glibc if conf.single_request => Sending::Sequential,
            Libc::Glibc => Sending::Parallel,
        };
        Lookup { libc, candidates: candidates(libc, conf, name), types, sending, tcp: libc == Libc::Glibc && conf.use_vc }
    }

    /// Whether the walk goes on to the next candidate after a step with `outcome`.
    pub fn continues_after(&self, outcome: StepOutcome) -> bool {
        match self.libc {
            // glibc keeps searching past "no such name", "no data" and SERVFAIL; anything
            // else (REFUSED, a timeout) ends the lookup with an error.
            Libc::Glibc => matches!(outcome, StepOutcome::NxDomain | StepOutcome::NoData | StepOutcome::ServFail),
            // musl stops at anything but NXDOMAIN: NODATA ends the walk, SERVFAIL fails it.
            Libc::Musl => outcome == StepOutcome::NxDomain,
        }
    }
}

fn candidates(libc: Libc, conf: &ResolvConf, name: &str) -> Vec<String> {
    let trailing_dot = name.ends_with('.');
    let bare = name.trim_end_matches('.');
    let absolute = format!("{bare}.");
    if trailing_dot || bare.is_empty() {
        return vec![absolute];
    }
    let dots = bare.matches('.').count();
    let searched = conf.search.iter().map(|suffix| suffix.trim_end_matches('.')).filter(|suffix| !suffix.is_empty());
    let searched: Vec<String> = searched.map(|suffix| format!("{bare}.{suffix}.")).collect();
    let enough_dots = dots >= conf.ndots;
    match libc {
        // Enough dots: as-is first, then the search list anyway.
        Libc::Glibc if enough_dots => std::iter::once(absolute).chain(searched).collect(),
        // Enough dots: as-is only.
        Libc::Musl if enough_dots => vec![absolute],
        Libc::Glibc | Libc::Musl => searched.into_iter().chain(std::iter::once(absolute)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> ResolvConf {
        ResolvConf::kubernetes_pod("default", "cluster.local", "10.96.0.10".parse().unwrap())
    }

    #[test]
    fn few_dots_walk_the_search_list_before_the_name_itself() {
        let walk = Lookup::plan(Libc::Glibc, &pod(), "api.example.com", &[RecordType::A, RecordType::AAAA]);
        assert_eq!(
            walk.candidates,
            [
                "api.example.com.default.svc.cluster.local.",
                "api.example.com.svc.cluster.local.",
                "api.example.com.cluster.local.",
                "api.example.com."
            ]
        );
        assert_eq!(walk.sending, Sending::Parallel);
    }

    #[test]
    fn enough_dots_try_the_name_first_and_musl_only_the_name() {
        let conf = ResolvConf { ndots: 2, ..pod() };
        let glibc = Lookup::plan(Libc::Glibc, &conf, "api.example.com", &[RecordType::A]);
        assert_eq!(glibc.candidates.len(), 4);
        assert_eq!(glibc.candidates[0], "api.example.com.");
        assert_eq!(Lookup::plan(Libc::Musl, &conf, "api.example.com", &[RecordType::A]).candidates, ["api.example.com."]);
    }

    #[test]
    fn a_trailing_dot_means_one_name() {
        assert_eq!(Lookup::plan(Libc::Glibc, &pod(), "api.example.com.", &[RecordType::A]).candidates, ["api.example.com."]);
    }

    #[test]
    fn options_change_how_queries_leave() {
        let conf = ResolvConf { single_request: true, use_vc: true, no_aaaa: true, ..pod() };
        let walk = Lookup::plan(Libc::Glibc, &conf, "web", &[RecordType::A, RecordType::AAAA]);
        assert_eq!((walk.sending, walk.tcp, walk.types.as_slice()), (Sending::Sequential, true, &[RecordType::A][..]));
        let musl = Lookup::plan(Libc::Musl, &conf, "web", &[RecordType::A, RecordType::AAAA]);
        assert_eq!((musl.sending, musl.tcp, musl.types.len()), (Sending::Parallel, false, 2));
    }

    #[test]
    fn step_outcomes_combine_like_glibc() {
        let (ok, nx, sf) = (Rcode::NOERROR, Rcode::NXDOMAIN, Rcode::SERVFAIL);
        assert_eq!(StepOutcome::of(&[Some((ok, 0)), Some((ok, 1))]), StepOutcome::Answer);
        assert_eq!(StepOutcome::of(&[Some((ok, 0)), Some((ok, 0))]), StepOutcome::NoData);
        assert_eq!(StepOutcome::of(&[Some((nx, 0)), Some((nx, 0))]), StepOutcome::NxDomain);
        assert_eq!(StepOutcome::of(&[Some((ok, 0)), Some((sf, 0))]), StepOutcome::ServFail);
        assert_eq!(StepOutcome::of(&[None, None]), StepOutcome::Timeout);
        assert_eq!(StepOutcome::of(&[Some((Rcode::REFUSED, 0))]), StepOutcome::OtherError);
    }

    #[test]
    fn glibc_searches_past_nodata_and_musl_stops() {
        let glibc = Lookup::plan(Libc::Glibc, &pod(), "web", &[RecordType::A]);
        let musl = Lookup::plan(Libc::Musl, &pod(), "web", &[RecordType::A]);
        assert!(glibc.continues_after(StepOutcome::NoData) && glibc.continues_after(StepOutcome::ServFail));
        assert!(!glibc.continues_after(StepOutcome::OtherError) && !glibc.continues_after(StepOutcome::Answer));
        assert!(!musl.continues_after(StepOutcome::NoData) && !musl.continues_after(StepOutcome::ServFail));
        assert!(musl.continues_after(StepOutcome::NxDomain));
    }
}
