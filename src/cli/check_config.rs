//! `approval-gate check-config`: validate and print the effective settings with secrets masked.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::settings::{self, Sources};

pub fn run(config: Option<PathBuf>) -> ExitCode {
    match settings::load(&Sources {
        config_file: config,
        env: None,
    }) {
        Ok(settings) => {
            print!("{}", settings.masked_toml());
            eprintln!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("approval-gate: {error}");
            ExitCode::from(2)
        }
    }
}
