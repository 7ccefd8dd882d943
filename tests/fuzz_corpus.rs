//! Replays the fuzz targets' seed corpus (and any regression inputs) through the same entry
//! points the fuzzers drive, so every input that ever mattered is checked on every run.
//! Crashes found by fuzzing go into `fuzz/corpus/TARGET/` with a name saying what they were.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no seed inputs in {}", dir.display());
}

#[test]
fn client_query_corpus_replays_cleanly() {
    replay("client_query", nodedns::fuzzing::client_query);
}

#[test]
fn upstream_response_corpus_replays_cleanly() {
    replay("upstream_response", nodedns::fuzzing::upstream_response);
}

#[test]
fn config_corpus_replays_cleanly() {
    replay("config", nodedns::fuzzing::config);
}

#[test]
fn tcp_stream_corpus_replays_cleanly() {
    replay("tcp_stream", nodedns::fuzzing::tcp_stream);
}

#[test]
fn naming_corpus_replays_cleanly() {
    replay("naming", nodedns::fuzzing::naming);
}

#[test]
fn snapshot_corpus_replays_cleanly() {
    replay("snapshot", nodedns::fuzzing::snapshot);
}
