//! The `kplane` binary: command-line parsing and wiring, nothing more. Every behaviour lives in the
//! library crates.

mod bench;
mod bench_faults;
mod bench_job;
mod bench_statefulset;
mod cli;
mod component_metrics;
mod components;
mod kubeconfig;
mod xray_cmd;

use anyhow::Result;
use clap::Parser;

// glibc malloc was a sixth of the CPU samples on the ingress and API hot paths (many small,
// short-lived allocations across two worker threads); mimalloc's thread-local free lists fit that.
// Built with `no_thp`: with transparent huge pages its arenas added ~20 MiB of idle RSS.
// `--features system-allocator` leaves glibc malloc in place for heap profilers (heaptrack).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(args.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kplane: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: Result<()> = runtime.block_on(cli::run(args));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kplane: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
