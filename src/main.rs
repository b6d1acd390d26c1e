//! The `prep` binary: parse, check, run a library stage, map errors to exit codes.

mod cli;
mod config;

use clap::Parser;
use cli::{Cli, Command};
use prep::Error;
use std::process::ExitCode;

const EXIT_INTERNAL: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_BAD_INPUT: u8 = 3;
const EXIT_VERIFY: u8 = 4;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let cli = Cli::parse(); // clap prints usage errors itself and exits 2
    match run(cli, argv) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            let chain = err.source_chain();
            let mut cause = chain.iter().skip(1);
            for c in cause.by_ref() {
                eprintln!("  caused by: {c}");
            }
            if let Error::Verification { problems, .. } = &err {
                for p in problems {
                    eprintln!("  {p}");
                }
            }
            ExitCode::from(exit_code(&err))
        }
    }
}

trait Chain {
    fn source_chain(&self) -> Vec<String>;
}

impl Chain for Error {
    fn source_chain(&self) -> Vec<String> {
        let mut out = vec![self.to_string()];
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(c) = cur {
            out.push(c.to_string());
            cur = c.source();
        }
        out
    }
}

fn exit_code(err: &Error) -> u8 {
    match err {
        Error::Usage(_) | Error::OutputExists { .. } => EXIT_USAGE,
        Error::Read { .. }
        | Error::BadInput { .. }
        | Error::BadRow { .. }
        | Error::MissingColumn { .. }
        | Error::Csv { .. }
        | Error::SourceDescription { .. } => EXIT_BAD_INPUT,
        Error::Verification { .. } => EXIT_VERIFY,
        _ => EXIT_INTERNAL,
    }
}

fn run(cli: Cli, argv: Vec<String>) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Filter(args) => {
            let cfg = config::filter_config(args, argv)?;
            let out = prep::filter::run(&cfg)?;
            for w in &out.warnings {
                eprintln!("warning: {w}");
            }
            let excluded: usize = out.excluded_by_reason.values().sum();
            println!("kept {} image(s), excluded {}", out.kept, excluded);
            if !out.excluded_by_reason.is_empty() {
                println!("{:<18} {:>7}", "reason", "count");
                for (reason, n) in &out.excluded_by_reason {
                    println!("{reason:<18} {n:>7}");
                }
            }
            println!("bag: {}", out.bag.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            let report = prep::manifest::verify_bag(&args.bag)?;
            if report.is_intact() {
                println!(
                    "{}: intact ({} payload files, {} bytes)",
                    args.bag.display(),
                    report.payload_files,
                    report.payload_bytes
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "{}: {} problem(s)",
                    args.bag.display(),
                    report.problems.len()
                );
                for p in &report.problems {
                    println!("  {p}");
                }
                Ok(ExitCode::from(EXIT_VERIFY))
            }
        }
        Command::Inpaint(args) => run_inpaint(config::inpaint_config(args, argv)?),
        Command::Doctor => {
            println!("prep {}", env!("CARGO_PKG_VERSION"));
            let commit = env!("PREP_GIT_COMMIT");
            println!(
                "commit: {}",
                if commit.is_empty() { "unknown" } else { commit }
            );
            println!("rayon threads: {}", rayon::current_num_threads());
            doctor_torch()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(feature = "train")]
fn doctor_torch() -> Result<(), Error> {
    let info = prep::train::torch_info()?;
    println!("libtorch: loaded (self-test sum = {})", info.self_test);
    println!("libtorch threads: {}", info.threads);
    println!(
        "cuda: {} ({} device(s))",
        if info.cuda_available {
            "available"
        } else {
            "not available"
        },
        info.cuda_devices
    );
    Ok(())
}

#[cfg(not(feature = "train"))]
fn doctor_torch() -> Result<(), Error> {
    println!("libtorch: not built in (built without the `train` feature)");
    Ok(())
}

fn run_inpaint(cfg: config::InpaintConfig) -> Result<ExitCode, Error> {
    match cfg {
        config::InpaintConfig::Single(c) => {
            let out = prep::inpaint::stage::run_single(&c)?;
            for t in &out.inpaint_ms {
                println!("inpaint_ms={t:.3}");
            }
            if c.detect == prep::inpaint::stage::Detect::Auto {
                println!("detect_ms={:.3}", out.detect_ms);
            }
            println!(
                "inpainted {} pixel(s) in {} hole(s) ({} masked pixel(s) kept as film){}; wrote {}",
                out.filled.pixels - out.filled.kept.len(),
                out.filled.holes,
                out.filled.kept.len(),
                if c.detect == prep::inpaint::stage::Detect::Auto {
                    format!(", {} annotation component(s) detected", out.components)
                } else {
                    String::new()
                },
                c.output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        config::InpaintConfig::Bag(c) => {
            let out = prep::inpaint::stage::run_bag(&c)?;
            for w in &out.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{} image(s): {} inpainted, {} passed through unchanged, {} excluded",
                out.images, out.inpainted, out.passed, out.excluded
            );
            println!("bag: {}", out.bag.path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
