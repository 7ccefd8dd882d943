/// mimalloc rather than the C library's allocator: no per-allocation header and tight size
/// classes, so a cached entry costs less resident memory (`cargo bench --bench memory`),
/// and a fast allocator under musl, whose own is slow.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nodedns::cli::main()
}
