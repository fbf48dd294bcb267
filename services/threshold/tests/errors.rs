//! A failing command says why on stderr and exits non-zero.

mod common;

use common::*;

#[test]
fn errors_go_to_stderr_with_a_non_zero_exit() {
    let out = threshold(&[
        "manifest",
        "load",
        "/nonexistent/day.csv",
        "--server",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent/day.csv"));
    assert!(out.stdout.is_empty());
}
