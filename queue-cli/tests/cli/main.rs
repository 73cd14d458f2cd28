//! The `queue` binary end to end against real redis-server processes: one test binary (one
//! link step) for the operator commands and `queue bench`.

mod bench;
mod input_errors;
mod ops;
