//! Writes the seed corpus, `fuzz/corpus/<target>/<name>`, from mosix-fuzz's `seeds` module:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`. Files of the same name are
//! replaced; other files (inputs added by hand, regressions) are left alone.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz.parent().unwrap_or(fuzz);
    for (target, seeds) in mosix_fuzz::seeds::all(root) {
        let dir = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
        eprintln!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}
