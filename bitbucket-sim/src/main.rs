//! The `bitbucket-sim` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("{}", bitbucket_sim::NOT_YET);
    ExitCode::from(2)
}
