fn main() -> std::process::ExitCode {
    nodedns::cli::main()
}
