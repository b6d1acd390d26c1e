//! Property tests for `prep filter` invariants over random metadata: every row is kept or
//! excluded exactly once, kept files are exactly the ones the rules allow, nothing outside the
//! dataset is read, and no two kept records share bytes or a path.

use prep::filter::{run, FilterConfig};
use prep::source::{Class, Encoding, Selection, SourceDesc};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashSet};
use std::fs;

#[derive(Debug, Clone)]
struct Row {
    finding: usize,
    view: usize,
    modality: usize,
    file: usize,
}

const FINDINGS: &[&str] = &[
    "Pneumonia/Viral/COVID-19",
    "COVID-19",
    "No Finding",
    "todo",
    "Pneumonia",
    "",
];
const VIEWS: &[&str] = &["PA", "AP Supine", "L", "Axial", "ap erect", ""];
const MODALITIES: &[&str] = &["X-ray", "CT"];
// Files: 0-3 real distinct images, 4 a copy of image 0, 5 missing, 6 an escape attempt.
const FILES: &[&str] = &[
    "a.png",
    "b.png",
    "c.png",
    "d.png",
    "a-copy.png",
    "gone.png",
    "../x.png",
];

fn rows() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec(
        (
            0..FINDINGS.len(),
            0..VIEWS.len(),
            0..MODALITIES.len(),
            0..FILES.len(),
        )
            .prop_map(|(finding, view, modality, file)| Row {
                finding,
                view,
                modality,
                file,
            }),
        1..14,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn every_row_is_accounted_for(rows in rows(), others in any::<bool>()) {
        let t = tempfile::tempdir().unwrap();
        let ds = t.path().join("ds");
        fs::create_dir_all(ds.join("images")).unwrap();
        for (i, f) in FILES[..4].iter().enumerate() {
            let img = prep::synth::chest_image(24, 24, i as u64, f, 0.0, Default::default());
            fs::write(ds.join("images").join(f), prep::synth::encode_png(&img).unwrap()).unwrap();
        }
        fs::copy(ds.join("images/a.png"), ds.join("images/a-copy.png")).unwrap();
        fs::write(t.path().join("x.png"), fs::read(ds.join("images/b.png")).unwrap()).unwrap();
        let mut csv = String::from("patientid,finding,view,modality,folder,filename\n");
        for (i, r) in rows.iter().enumerate() {
            csv.push_str(&format!("{i},{},{},{},images,{}\n", FINDINGS[r.finding], VIEWS[r.view], MODALITIES[r.modality], FILES[r.file]));
        }
        fs::write(ds.join("metadata.csv"), csv).unwrap();
        let desc = SourceDesc::load("cohen").unwrap();
        let keep: BTreeSet<Class> = if others { [Class::Healthy, Class::Diseased].into() } else { [Class::Covid].into() };
        let cfg = FilterConfig {
            source_arg: "cohen".into(),
            metadata: Some(ds.join("metadata.csv")),
            source: desc,
            dataset: ds.clone(),
            out: t.path().join("bag"),
            selection: Selection { keep, require_pcr: false, exclude_list: BTreeSet::new(), folder_label: None },
            exclude_list_file: None,
            encoding: Encoding::Auto,
            link: false,
            force: false,
            argv: vec![],
            dicom: None,
        };
        let outcome = run(&cfg).unwrap();
        let excluded: usize = outcome.excluded_by_reason.values().sum();
        prop_assert_eq!(outcome.kept + excluded, rows.len());

        // Independent expectation: rows passing metadata rules with a real, first-seen image.
        let mut seen_bytes = HashSet::new();
        let mut want = 0;
        for r in &rows {
            let f = FINDINGS[r.finding];
            let last = f.rsplit('/').next().unwrap();
            let class = match last { "COVID-19" => Some("covid"), "No Finding" => Some("healthy"), "todo" | "" => None, _ => Some("diseased") };
            let frontal = ["pa", "ap supine", "ap erect"].contains(&VIEWS[r.view].to_lowercase().as_str());
            let wanted = match class { Some("covid") => !others, Some(_) => others, None => false };
            if MODALITIES[r.modality] == "X-ray" && frontal && wanted && r.file < 5 {
                let content = if r.file == 4 { 0 } else { r.file };
                if seen_bytes.insert(content) { want += 1; }
            }
        }
        prop_assert_eq!(outcome.kept, want);
        let records = prep::manifest::read_records(&cfg.out).unwrap();
        let shas: HashSet<_> = records.iter().map(|r| r.sha256.clone()).collect();
        let paths: HashSet<_> = records.iter().map(|r| r.path.clone()).collect();
        prop_assert_eq!(shas.len(), records.len());
        prop_assert_eq!(paths.len(), records.len());
        prop_assert!(records.iter().all(|r| !r.source_file.contains("..")));
        prop_assert!(prep::manifest::verify_bag(&cfg.out).unwrap().is_intact());
    }
}
