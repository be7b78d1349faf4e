//! A minimal program embedding the library: scores images against texts.
//!
//! `cargo run --release --example embed -- MODEL IMAGE... -- TEXT...`
//! e.g. `cargo run --release --example embed -- tests/fixtures/tiny/hf tests/fixtures/images/CLIP.png -- "a diagram"`

use clip_wgpu::{clip_score, cosine, Clip, ClipOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").ok_or("usage: embed MODEL IMAGE... -- TEXT...")?;
    let (model, images) = args[..split].split_first().ok_or("usage: embed MODEL IMAGE... -- TEXT...")?;
    let texts = &args[split + 1..];

    let clip = Clip::load(model, &ClipOptions::default())?;
    eprintln!("running on {}", clip.engine_description());
    let text_embeddings = clip.encode_texts(texts)?;
    for (path, image) in images.iter().zip(clip.encode_image_files(images)) {
        match image {
            Ok(e) => {
                for (text, t) in texts.iter().zip(text_embeddings.chunks(clip.embed_dim())) {
                    println!("{path}\t{text}\t{:.3}", clip_score(cosine(&e, t)));
                }
            }
            Err(err) => eprintln!("{err}"),
        }
    }
    Ok(())
}
