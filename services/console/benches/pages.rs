//! Console page latency (filled in below).

fn main() {}
