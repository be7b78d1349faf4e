//! Where inputs come from: image paths, directories, globs, path lists and stdin, expanded
//! lazily (a list of a million paths is read as it is consumed), and WebDataset `.tar` shards
//! (each sample one input, read as the shard is consumed); texts and labels; aligned
//! image/caption pairs files (CSV, TSV, JSONL, or shards with their captions).

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use clap::Args;

use clip_wgpu::shards::{self, Sample, Shard};
use clip_wgpu::{Clip, Error, PreparedImage};

/// File extensions (lower case) that directories and globs are searched for.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "jpe", "jfif", "png", "gif", "bmp", "tif", "tiff", "webp"];

#[derive(Args, Clone, Default)]
pub struct ImageArgs {
    /// An image file, a directory (searched recursively for image files, in sorted order), a
    /// glob (quoted: 'photos/**/*.jpg'), or `-` to read paths from stdin, one per line.
    /// A WebDataset shard (`.tar`, named directly, by a glob or in a list; not found in
    /// directories) gives one input per sample, named by its key. Repeatable.
    #[arg(long = "image", value_name = "FILE|DIR|GLOB|-")]
    pub images: Vec<String>,
    /// A file of image paths (or directories), one per line; `-` for stdin. Repeatable; read
    /// after the --image arguments.
    #[arg(long, value_name = "FILE")]
    pub images_from: Vec<PathBuf>,
}

impl ImageArgs {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.images_from.is_empty()
    }

    pub fn iter(&self) -> ImageIter {
        let mut specs: VecDeque<Spec> = self.images.iter().map(|s| Spec::Arg(s.clone())).collect();
        specs.extend(self.images_from.iter().map(|p| Spec::List(p.clone())));
        ImageIter { specs, ready: VecDeque::new(), lines: None, shard: None }
    }
}

/// One image input: its name as given (or as found in a directory), and an error found while
/// expanding it (a glob without matches, an unreadable directory or list).
#[derive(Debug, Clone)]
pub struct ImageInput {
    pub name: String,
    pub path: PathBuf,
    pub error: Option<String>,
    /// A shard's sample: the sample (its key is `name`, its shard `path`).
    pub sample: Option<Box<Sample>>,
    /// A shard still to be opened (the iterator turns it into its samples).
    shard: bool,
}

impl ImageInput {
    fn file(path: PathBuf) -> ImageInput {
        let shard = shards::is_shard(&path);
        ImageInput { name: path.display().to_string(), path, error: None, sample: None, shard }
    }

    fn failed(name: impl Into<String>, error: impl Into<String>) -> ImageInput {
        let name = name.into();
        ImageInput { path: PathBuf::from(&name), name, error: Some(error.into()), sample: None, shard: false }
    }

    fn from_sample(s: Sample) -> ImageInput {
        ImageInput { name: s.key.clone(), path: s.shard.clone(), error: None, sample: Some(Box::new(s)), shard: false }
    }

    /// The caption a shard's sample carries.
    pub fn caption(&self) -> Option<&str> {
        self.sample.as_ref().and_then(|s| s.caption.as_deref())
    }

    /// The shard a sample comes from.
    pub fn shard(&self) -> Option<&Path> {
        self.sample.as_ref().map(|s| s.shard.as_path())
    }

    /// Reads the image and prepares it for the encoder (cached embedding or pixels).
    pub fn prepare(&self, clip: &Clip) -> clip_wgpu::Result<PreparedImage> {
        match (&self.error, &self.sample) {
            (Some(e), _) => Err(Error::Io { path: self.path.clone(), msg: e.clone() }),
            (None, Some(s)) => clip.prepare_bytes(&s.path_name().display().to_string(), s.image_bytes()?),
            (None, None) => clip.prepare_file(&self.path),
        }
    }
}

enum Spec {
    Arg(String),
    List(PathBuf),
}

type Lines = Box<dyn Iterator<Item = std::io::Result<String>> + Send>;

/// The image inputs, expanded as they are consumed.
pub struct ImageIter {
    specs: VecDeque<Spec>,
    ready: VecDeque<ImageInput>,
    lines: Option<(String, Lines)>,
    /// The shard being read, and its path.
    shard: Option<(PathBuf, Shard)>,
}

impl Iterator for ImageIter {
    type Item = ImageInput;

    fn next(&mut self) -> Option<ImageInput> {
        loop {
            if let Some((path, shard)) = &mut self.shard {
                match shard.next() {
                    Some(Ok(s)) => return Some(ImageInput::from_sample(s)),
                    Some(Err(e)) => {
                        let name = path.display().to_string();
                        self.shard = None;
                        return Some(ImageInput::failed(name, e.to_string()));
                    }
                    None => self.shard = None,
                }
            }
            if let Some(x) = self.ready.pop_front() {
                if x.shard {
                    match Shard::open(&x.path) {
                        Ok(s) => self.shard = Some((x.path, s)),
                        Err(e) => return Some(ImageInput::failed(x.name, e.to_string())),
                    }
                    continue;
                }
                return Some(x);
            }
            if let Some((source, lines)) = &mut self.lines {
                match lines.next() {
                    Some(Ok(line)) => {
                        let line = line.trim_end_matches(['\r', '\n']);
                        if !line.trim().is_empty() {
                            expand_path(Path::new(line), &mut self.ready);
                        }
                    }
                    Some(Err(e)) => {
                        self.ready.push_back(ImageInput::failed(source.clone(), format!("reading the list: {e}")));
                        self.lines = None;
                    }
                    None => self.lines = None,
                }
                continue;
            }
            match self.specs.pop_front()? {
                Spec::Arg(s) if s == "-" => self.lines = Some(("<stdin>".into(), stdin_lines())),
                Spec::Arg(s) => expand_arg(&s, &mut self.ready),
                Spec::List(p) if p.as_os_str() == "-" => self.lines = Some(("<stdin>".into(), stdin_lines())),
                Spec::List(p) => match File::open(&p) {
                    Ok(f) => self.lines = Some((p.display().to_string(), Box::new(BufReader::new(f).lines()))),
                    Err(e) => self.ready.push_back(ImageInput::failed(p.display().to_string(), e.to_string())),
                },
            }
        }
    }
}

/// Lines of stdin, read as they are needed (`Stdin` is `Send`, unlike its lock).
fn stdin_lines() -> Lines {
    let stdin = std::io::stdin();
    Box::new(std::iter::from_fn(move || {
        let mut s = String::new();
        match stdin.read_line(&mut s) {
            Ok(0) => None,
            Ok(_) => Some(Ok(s)),
            Err(e) => Some(Err(e)),
        }
    }))
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// An `--image` argument: an existing path (file or directory), else a glob, else a path that
/// will fail when read (and be reported then).
fn expand_arg(s: &str, out: &mut VecDeque<ImageInput>) {
    let p = Path::new(s);
    if p.exists() || !is_glob(s) {
        return expand_path(p, out);
    }
    let paths = match glob::glob(s) {
        Ok(g) => g,
        Err(e) => return out.push_back(ImageInput::failed(s, format!("bad glob pattern: {e}"))),
    };
    let mut found = 0;
    for m in paths {
        match m {
            Ok(p) if p.is_dir() => {
                found += 1;
                expand_path(&p, out)
            }
            Ok(p) if is_image(&p) || shards::is_shard(&p) => {
                found += 1;
                out.push_back(ImageInput::file(p))
            }
            Ok(_) => {}
            Err(e) => {
                found += 1;
                out.push_back(ImageInput::failed(e.path().display().to_string(), e.error().to_string()))
            }
        }
    }
    if found == 0 {
        out.push_back(ImageInput::failed(s, "no image file matches this pattern"));
    }
}

/// A file as is; a directory: every image file under it (recursively, following links once),
/// sorted by path, and an error entry for each unreadable directory.
fn expand_path(p: &Path, out: &mut VecDeque<ImageInput>) {
    if !p.is_dir() {
        return out.push_back(ImageInput::file(p.to_path_buf()));
    }
    let mut found: Vec<ImageInput> = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(c) = dir.canonicalize() {
            if !seen.insert(c) {
                continue;
            }
        }
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                found.push(ImageInput::failed(dir.display().to_string(), format!("reading the directory: {e}")));
                continue;
            }
        };
        for entry in rd {
            match entry {
                Ok(e) => {
                    let path = e.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if is_image(&path) {
                        found.push(ImageInput::file(path));
                    }
                }
                Err(e) => {
                    found.push(ImageInput::failed(dir.display().to_string(), format!("reading the directory: {e}")))
                }
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    out.extend(found);
}

#[derive(Args, Clone, Default)]
pub struct TextArgs {
    /// A text (repeatable).
    #[arg(long = "text")]
    pub texts: Vec<String>,
    /// A file of texts, one per line (empty lines skipped); `-` for stdin. Repeatable; read
    /// after the --text arguments.
    #[arg(long, value_name = "FILE")]
    pub texts_from: Vec<PathBuf>,
}

impl TextArgs {
    /// Every text, in order. An unreadable file is fatal.
    pub fn collect(&self) -> clip_wgpu::Result<Vec<String>> {
        let mut v = self.texts.clone();
        for p in &self.texts_from {
            v.extend(read_lines(p)?);
        }
        Ok(v)
    }
}

/// The non-empty lines of a file (`-`: stdin), without their line endings.
pub fn read_lines(p: &Path) -> clip_wgpu::Result<Vec<String>> {
    let text =
        if p.as_os_str() == "-" { std::io::read_to_string(std::io::stdin()) } else { std::fs::read_to_string(p) }
            .map_err(|e| Error::Io { path: p.into(), msg: e.to_string() })?;
    Ok(text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()).map(String::from).collect())
}

/// One row of a pairs file.
#[derive(Debug, Clone)]
pub struct Pair {
    pub image: ImageInput,
    pub text: String,
}

impl Pair {
    fn failed(file: &Path, line: u64, error: impl Into<String>) -> Pair {
        Pair { image: ImageInput::failed(format!("{}:{line}", file.display()), error), text: String::new() }
    }
}

type PairIter = Box<dyn Iterator<Item = Pair> + Send>;

/// Opens a pairs file by its extension: `.csv`, `.tsv`/`.tab` (a header row with an `image`
/// column and a `text` or `caption` column; others ignored) or `.jsonl`/`.ndjson` (objects
/// with the same keys). Image paths are used as written (relative ones from the current
/// directory). A row that cannot be used becomes an error entry named `FILE:LINE`; an
/// unreadable file or missing columns are fatal.
pub fn read_pairs(path: &Path) -> clip_wgpu::Result<PairIter> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let io = |e: &dyn std::fmt::Display| Error::Io { path: path.into(), msg: e.to_string() };
    let file = File::open(path).map_err(|e| io(&e))?;
    match ext.as_str() {
        "csv" | "tsv" | "tab" => {
            let mut r = csv::ReaderBuilder::new()
                .delimiter(if ext == "csv" { b',' } else { b'\t' })
                .flexible(true)
                .quoting(ext == "csv")
                .from_reader(file);
            let headers = r.headers().map_err(|e| io(&e))?.clone();
            let col =
                |names: &[&str]| headers.iter().position(|h| names.contains(&h.trim().to_ascii_lowercase().as_str()));
            let (Some(ic), Some(tc)) = (col(&["image"]), col(&["text", "caption"])) else {
                return Err(io(&format!(
                    "the header row needs an `image` column and a `text` (or `caption`) column, found: {}",
                    headers.iter().collect::<Vec<_>>().join(", ")
                )));
            };
            let file = path.to_path_buf();
            Ok(Box::new(r.into_records().map(move |rec| match rec {
                Ok(rec) => {
                    let line = rec.position().map_or(0, |p| p.line());
                    match (rec.get(ic), rec.get(tc)) {
                        (Some(i), Some(t)) if !i.trim().is_empty() => {
                            Pair { image: ImageInput::file(PathBuf::from(i)), text: t.to_string() }
                        }
                        _ => Pair::failed(&file, line, "row without an image path or a text"),
                    }
                }
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    Pair::failed(&file, line, e.to_string())
                }
            })))
        }
        "jsonl" | "ndjson" => {
            let file_path = path.to_path_buf();
            Ok(Box::new(BufReader::new(file).lines().enumerate().filter_map(move |(i, line)| {
                let n = i as u64 + 1;
                let line = match line {
                    Ok(l) => l,
                    Err(e) => return Some(Pair::failed(&file_path, n, e.to_string())),
                };
                if line.trim().is_empty() {
                    return None;
                }
                let v: serde_json::Value = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(e) => return Some(Pair::failed(&file_path, n, format!("not JSON: {e}"))),
                };
                let text = v.get("text").or_else(|| v.get("caption")).and_then(|t| t.as_str());
                Some(match (v.get("image").and_then(|i| i.as_str()), text) {
                    (Some(i), Some(t)) => Pair { image: ImageInput::file(PathBuf::from(i)), text: t.to_string() },
                    _ => Pair::failed(&file_path, n, "needs string fields `image` and `text` (or `caption`)"),
                })
            })))
        }
        // a WebDataset shard: each sample's image with its caption
        "tar" => {
            let shard = Shard::open(path)?;
            let name = path.to_path_buf();
            Ok(Box::new(shard.map(move |s| match s {
                Ok(s) => {
                    let text = s.caption.clone();
                    let mut image = ImageInput::from_sample(s);
                    if text.is_none() {
                        image.error =
                            Some("no caption in this sample (a .txt member, or a .json one with \"caption\")".into());
                        image.path = image.sample.as_ref().map(|s| s.path_name()).unwrap_or_default();
                    }
                    Pair { image, text: text.unwrap_or_default() }
                }
                Err(e) => {
                    Pair { image: ImageInput::failed(name.display().to_string(), e.to_string()), text: String::new() }
                }
            })))
        }
        _ => Err(io(&"pairs files are .csv, .tsv, .jsonl or a WebDataset .tar shard (by extension)")),
    }
}
