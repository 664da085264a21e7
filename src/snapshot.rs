//! Snapshot assertions for text output: a committed file under `tests/snapshots/` is what the
//! output must be, so a change of wording or layout is a reviewed diff. `UPDATE_SNAPSHOTS=1`
//! rewrites the files instead of comparing (then review `git diff tests/snapshots` and commit).

/// Compare `actual` with the committed snapshot `name`, or rewrite it under UPDATE_SNAPSHOTS=1.
pub(crate) fn assert_snapshot(name: &str, actual: &str) {
    let path = format!("{}/tests/snapshots/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{path}: {e}; create it with UPDATE_SNAPSHOTS=1 cargo test --lib snapshots")
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{path} differs from the output from line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             If the change is intended: UPDATE_SNAPSHOTS=1 cargo test --lib snapshots, \
             review `git diff tests/snapshots` and commit it.\n--- actual output ---\n{actual}",
            first + 1,
            expected.lines().nth(first).unwrap_or("<end of file>"),
            actual.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}
