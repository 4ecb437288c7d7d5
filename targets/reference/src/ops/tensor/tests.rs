//! Tests of the data-movement ops on small tensors.

#[test]
fn placeholder() {}
