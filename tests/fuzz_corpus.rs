//! The deterministic pass over the fuzz corpus: every stored input of every fuzz target
//! (`fuzz/corpus/<target>/`: seeds and every crasher once fixed) goes through the same entry point
//! the cargo-fuzz target calls (`<crate>::fuzzing::TARGETS` of api-types, apiserver, store and
//! networking), and none may panic. No cargo-fuzz needed. Every corpus directory has its target.

use std::path::Path;

#[test]
fn every_stored_fuzz_input_runs_without_panicking() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let targets: Vec<(&str, store::fuzzing::Entry)> = [
        api_types::fuzzing::TARGETS,
        apiserver::fuzzing::TARGETS,
        store::fuzzing::TARGETS,
        networking::fuzzing::TARGETS,
    ]
    .concat();
    let mut dirs: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("{}: {e}", corpus.display()))
        .map(|d| d.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut names: Vec<String> = targets.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(dirs, names, "every corpus directory has a target and every target a corpus");
    let mut failures = Vec::new();
    for (target, entry) in targets {
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
