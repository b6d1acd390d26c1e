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
/// `prep audit --fail-on confounded` found the set confounded.
const EXIT_CONFOUNDED: u8 = 5;

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
                // The column is as wide as the longest reason (e.g. `unsupported-transfer-syntax`).
                let w = out
                    .excluded_by_reason
                    .keys()
                    .map(|r| r.len())
                    .max()
                    .unwrap_or(0)
                    .max(18);
                println!("{:<w$} {:>7}", "reason", "count");
                for (reason, n) in &out.excluded_by_reason {
                    println!("{reason:<w$} {n:>7}");
                }
            }
            println!("bag: {}", out.bag.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Split(args) => run_split(config::split_config(args, argv)?),
        Command::Export(args) => {
            let out = prep::export::run(&config::export_config(args, argv)?)?;
            for (split, n, shards) in &out.splits {
                println!("{split:<8} {n:>8} samples in {shards:>4} shard(s)");
            }
            println!("classes: {}", out.classes.join(", "));
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
        Command::Audit(args) => run_audit(args, argv),
        Command::Harmonize(args) => {
            let out = prep::harmonize::run(&config::harmonize_config(args, argv)?)?;
            for w in &out.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{} image(s) harmonized to {}x{} 8-bit grey PNG ({} with a border or frame cropped), {} excluded",
                out.images, out.size, out.size, out.cropped, out.excluded
            );
            println!("bag: {}", out.bag.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            let mut log = |line: &str| println!("{line}");
            let outcome = prep::demo::run(&args.out, args.seed, args.size, &mut log)?;
            println!("synthetic datasets: {}", outcome.datasets.display());
            for (name, out, _) in &outcome.stages {
                println!("{name:<14} {}", out.display());
            }
            println!("report: {}", outcome.report.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_pipeline(args),
        Command::Report(args) => {
            prep::report::write_with(&args.target, &args.out, args.annotations.as_deref())?;
            println!("report: {}", args.out.display());
            Ok(ExitCode::SUCCESS)
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
        #[cfg(feature = "train")]
        Command::Train(args) => train_cmd(args, argv),
        #[cfg(feature = "train")]
        Command::Predict(args) => predict_cmd(args),
        #[cfg(feature = "train")]
        Command::Evaluate(args) => evaluate_cmd(args),
        #[cfg(feature = "train")]
        Command::Explain(args) => explain_cmd(args),
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

fn run_pipeline(args: cli::RunArgs) -> Result<ExitCode, Error> {
    let sets = config::parse_sets(&args.sets)?;
    let pipeline = prep::pipeline::PipelineFile::load(&args.pipeline)?;
    let plan = pipeline.plan(&sets)?;
    if args.dry_run {
        for (i, st) in plan.iter().enumerate() {
            let why = prep::pipeline::needs_run(st)?.unwrap_or_else(|| "up to date".into());
            println!(
                "[{}/{}] {} ({why}): prep {}",
                i + 1,
                plan.len(),
                st.name,
                st.argv.join(" ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut exec = prep::pipeline::exec_child;
    let mut log = |line: &str| println!("{line}");
    let done = prep::pipeline::run(
        &plan,
        args.from.as_deref(),
        args.only.as_deref(),
        &mut exec,
        &mut log,
    )?;
    for t in prep::pipeline::write_grid_tables(&plan)? {
        println!("grid table: {}", t.display());
    }
    for t in prep::pipeline::loso::write_tables(&plan)? {
        println!("internal vs external table: {}", t.display());
    }
    let ran = done.iter().filter(|(_, r)| *r).count();
    println!(
        "pipeline {}: {} stage(s) run, {} skipped",
        args.pipeline.display(),
        ran,
        done.len() - ran
    );
    Ok(ExitCode::SUCCESS)
}

fn run_audit(args: cli::AuditArgs, argv: Vec<String>) -> Result<ExitCode, Error> {
    let fail_on = args.fail_on;
    let cfg = config::audit_config(args, argv)?;
    let out = prep::audit::run(&cfg)?;
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "verdict: {} (probe AUC {:.3}, 95 % CI {:.3}-{:.3}; top features: {})",
        out.verdict,
        out.probe_auc,
        out.ci[0],
        out.ci[1],
        if out.top_features.is_empty() {
            "none".to_string()
        } else {
            out.top_features.join(", ")
        }
    );
    println!("audit: {}", out.out.join("audit.json").display());
    if fail_on == Some(cli::FailOn::Confounded) && out.confounded() {
        return Ok(ExitCode::from(EXIT_CONFOUNDED));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_split(mode: config::SplitMode) -> Result<ExitCode, Error> {
    match mode {
        config::SplitMode::Check {
            target,
            rules,
            near_duplicates,
        } => {
            let r = prep::split::check(&target, &rules, near_duplicates)?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            if let Some(f) = r.fingerprints {
                println!(
                    "fingerprints: {} read from the bag, {} computed",
                    f.cached, f.computed
                );
            }
            println!(
                "{}: no group crosses splits ({} images in {} groups)",
                target.display(),
                r.images,
                r.groups
            );
            for (s, n) in &r.splits {
                println!("  {s:<8} {n:>7} images");
            }
            print_merges(&r.merges);
            Ok(ExitCode::SUCCESS)
        }
        config::SplitMode::Split(cfg) => {
            let out = prep::split::run(&cfg)?;
            for w in &out.warnings {
                eprintln!("warning: {w}");
            }
            if cfg.near_duplicates {
                let f = out.fingerprints;
                println!(
                    "fingerprints: {} read from the bags, {} computed",
                    f.cached, f.computed
                );
            }
            if std::env::var_os("PREP_TIMINGS").is_some() {
                for (step, s) in &out.phases {
                    eprintln!("timing: {step:<24} {s:9.3} s");
                }
            }
            print_merges(&out.merges);
            let total: usize = out.counts.values().sum();
            println!("{} images in {} groups", total, out.groups);
            println!(
                "{:<8} {:<10} {:>7} {:>7}",
                "split", "class", "images", "share"
            );
            for ((split, class), n) in &out.counts {
                let split_total: usize = out
                    .counts
                    .iter()
                    .filter(|((s, _), _)| s == split)
                    .map(|(_, n)| n)
                    .sum();
                println!(
                    "{split:<8} {class:<10} {n:>7} {:>6.1}%",
                    100.0 * *n as f64 / split_total.max(1) as f64
                );
            }
            println!("achieved fractions per class:");
            for ((class, split), f) in &out.fractions {
                println!("  {class:<10} {split:<8} {f:.3}");
            }
            let excluded: usize = out.excluded_by_reason.values().sum();
            if excluded > 0 {
                println!("excluded {excluded} image(s):");
                for (reason, n) in &out.excluded_by_reason {
                    println!("  {reason:<22} {n:>7}");
                }
            }
            println!("bag: {}", out.bag.path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_merges(merges: &std::collections::BTreeMap<String, usize>) {
    println!("groups merged, by reason:");
    for reason in [
        "patient",
        "alias",
        "exact-duplicate",
        "cross-reference",
        "near-duplicate",
        "declared",
    ] {
        if let Some(n) = merges.get(reason) {
            println!("  {reason:<16} {n:>6}");
        } else if reason != "declared" {
            println!("  {reason:<16} {:>6}", 0);
        }
    }
}

#[cfg(feature = "train")]
fn train_cmd(args: cli::TrainArgs, argv: Vec<String>) -> Result<ExitCode, Error> {
    let cfg = config::train_config(args, argv)?;
    let out = prep::train::run::run(&cfg)?;
    for n in &out.notes {
        eprintln!("warning: {n}");
    }
    println!("device: {}", out.device);
    for (i, r) in out.runs.iter().enumerate() {
        let test = r
            .test
            .as_ref()
            .map(|t| format!(", test accuracy {:.4} (loss {:.4})", t.accuracy, t.loss))
            .unwrap_or_default();
        println!(
            "run {} (seed {}): best epoch {} of {}, val accuracy {:.4}, max val accuracy {:.4}, min val loss {:.4}{test}",
            i + 1,
            r.seed,
            r.best_epoch,
            r.epochs_run,
            r.best_val.accuracy,
            r.max_val_accuracy,
            r.min_val_loss
        );
    }
    if out.runs.len() > 1 {
        let summary = std::fs::read_to_string(out.out.join("summary.md"))
            .map_err(|e| Error::read(out.out.join("summary.md"), e))?;
        print!("{summary}");
    }
    println!("run: {}", out.out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "train")]
fn predict_cmd(args: cli::PredictArgs) -> Result<ExitCode, Error> {
    let (device, note) = prep::train::device::resolve(config::device_choice(args.device))?;
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    let model =
        prep::train::predict::load_model(&args.model, args.classes, args.image_size, device)?;
    let preds = prep::train::predict::predict(&model, &args.images)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&preds).map_err(|e| Error::Usage(e.to_string()))?
        );
    } else {
        let mut header = format!("{:<40}", "image");
        for c in &model.classes {
            header.push_str(&format!(" {c:>12}"));
        }
        println!("{header}");
        for p in &preds {
            let mut line = format!("{:<40}", p.image);
            for v in p.probabilities.values() {
                line.push_str(&format!(" {:>12.4}", v.as_f64().unwrap_or(f64::NAN)));
            }
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "train")]
fn evaluate_cmd(args: cli::EvaluateArgs) -> Result<ExitCode, Error> {
    let cfg = config::evaluate_config(args)?;
    let out = prep::evaluate::run::run(&cfg)?;
    for n in &out.notes {
        eprintln!("note: {n}");
    }
    let m = &out.metrics;
    println!(
        "{} split: {}",
        cfg.split.name(),
        prep::evaluate::run::headline(m)
    );
    if m["external"]["n"].as_u64().unwrap_or(0) > 0 {
        let f = |v: &serde_json::Value| {
            v.as_f64()
                .map(|x| format!("{x:.4}"))
                .unwrap_or_else(|| "undefined (one class)".into())
        };
        println!(
            "internal AUC {}, external AUC {}, gap {}",
            f(&m["internal"]["auc"]),
            f(&m["external"]["auc"]),
            f(&m["auc_gap_internal_minus_external"])
        );
    }
    if let Some(c) = m.get("counterfactual") {
        println!(
            "counterfactual: {} matched, flip rate {}, mean |dp| {}",
            c["matched"], c["flip_rate"], c["mean_abs_delta_p"]
        );
    }
    println!("evaluation: {}", out.out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "train")]
fn explain_cmd(args: cli::ExplainArgs) -> Result<ExitCode, Error> {
    config::explain_config(&args)?;
    let m = &args.model;
    let (device, note) = prep::train::device::resolve(config::device_choice(m.device))?;
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    let loaded = prep::evaluate::run::load(
        &m.model,
        m.classes.clone(),
        m.image_size,
        m.positive.as_deref(),
        config::occlusion_choice(m.occlude),
        device,
    )?;
    let cams = prep::evaluate::explain::run(&loaded, &args.images, &args.out, m.force)?;
    for c in &cams {
        println!(
            "{}: p({}) = {:.4}, {}x{} map, lung-field share {}",
            c.image,
            c.positive_class,
            c.probability,
            c.height,
            c.width,
            c.lung_field_share
                .map(|s| format!("{s:.3}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    println!("explanations: {}", args.out.display());
    Ok(ExitCode::SUCCESS)
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
        config::InpaintConfig::Measure(c) => {
            print!("{}", prep::inpaint::annotations::run(&c)?);
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
