//! The deterministic pass over the fuzz corpus: every stored input of this crate's fuzz targets
//! (`fuzz/corpus/<target>/`: seeds and every crasher once fixed) goes through the same entry point
//! the cargo-fuzz target calls (`apiserver::fuzzing`), and none may panic. No cargo-fuzz needed.

use std::path::Path;

#[test]
fn every_stored_fuzz_input_runs_without_panicking() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut failures = Vec::new();
    for (target, entry) in apiserver::fuzzing::TARGETS {
        let dir = corpus.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| f.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} holds no input", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if std::panic::catch_unwind(|| entry(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "these inputs panic: {failures:#?}");
}
