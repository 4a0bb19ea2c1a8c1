//! Print the model_signing-style manifest of a model: `cargo run --release --example hash_model -- PATH`.
use std::path::PathBuf;

fn main() {
    let path = PathBuf::from(std::env::args().nth(1).expect("usage: hash_model PATH"));
    let t = std::time::Instant::now();
    let entries = ckptguard_sign::hash_model(&path, None, &ckptguard_sign::SignOptions::default())
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(2)
        });
    let bytes: u64 = entries.iter().map(|e| e.size).sum();
    for e in entries.iter().take(20) {
        let hex: String = e.digest.iter().map(|b| format!("{b:02x}")).collect();
        println!("{hex}  {}", e.name);
    }
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "{} files, {bytes} bytes in {s:.3}s = {:.0} MB/s",
        entries.len(),
        bytes as f64 / s / 1e6
    );
}
