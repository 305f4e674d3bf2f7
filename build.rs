//! Link options of the `kplane` binary in release builds (no code is generated here).
//!
//! On x86_64 Linux (glibc), whose default linker is rust-lld since Rust 1.90:
//! - `--icf=all`: identical code folding. Without a crate-wide `share-generics`, every crate
//!   compiled at opt-level 3 keeps its own copy of each generic function it instantiates, and
//!   LLVM merges functions only inside one crate; the linker folds the byte-identical copies
//!   across crates (-0.69 MB). Rust promises no distinct addresses for distinct functions, so
//!   folding is sound; the symbol table keeps every name, `perf` and panics show one of them.
//! - `-z pack-relative-relocs` (DT_RELR): the position-independent binary's relative
//!   relocations packed as bitmaps, 1.85 MB of `.rela.dyn` down to 20 KB, ASLR kept. It needs
//!   glibc >= 2.36 to load (the binary then requires `GLIBC_ABI_DT_RELR`), so it is used only
//!   when the build machine's own libc provides that version.
//!
//! Debug and test builds are left alone.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    // `PROFILE` is "release" for the release profile and the profiles inheriting it (`profiling`).
    let lld_target = var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if var("PROFILE") != "release" || !lld_target {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
    if var("HOST") == var("TARGET") && glibc_has_dt_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc (the one the binary will load) defines `GLIBC_ABI_DT_RELR`.
fn glibc_has_dt_relr() -> bool {
    const NEEDLE: &[u8] = b"GLIBC_ABI_DT_RELR";
    ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6", "/usr/lib64/libc.so.6"]
        .iter()
        .find_map(|path| std::fs::read(path).ok())
        .is_some_and(|libc| libc.windows(NEEDLE.len()).any(|w| w == NEEDLE))
}
