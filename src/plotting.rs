//! Shared by every stage that draws PNG plots with plotters (train curves, audit charts).

pub mod font {
    //! plotters draws text through ab_glyph, which needs a TrueType font registered once. prep
    //! ships none (a font file is large): it uses the system's DejaVu/Liberation fonts, or the
    //! file in PREP_FONT. Without one, plots are drawn without text, and say so once.
    use std::sync::OnceLock;

    static FONT: OnceLock<bool> = OnceLock::new();

    pub fn ensure() -> bool {
        *FONT.get_or_init(|| {
            let mut candidates: Vec<String> = std::env::var("PREP_FONT").into_iter().collect();
            candidates.extend(
                [
                    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                    "/usr/share/fonts/TTF/DejaVuSans.ttf",
                    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
                    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
                    "/Library/Fonts/Arial.ttf",
                    "/System/Library/Fonts/Supplemental/Arial.ttf",
                    "C:\\Windows\\Fonts\\arial.ttf",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            for c in candidates {
                if let Ok(bytes) = std::fs::read(&c) {
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    if plotters::style::register_font(
                        "sans-serif",
                        plotters::style::FontStyle::Normal,
                        bytes,
                    )
                    .is_ok()
                    {
                        return true;
                    }
                }
            }
            eprintln!("warning: no TrueType font found (set PREP_FONT=/path/to/font.ttf): plots are drawn without text");
            false
        })
    }
}
