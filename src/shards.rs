//! WebDataset shards: `.tar` files whose members are grouped into samples by key (feature
//! `webdataset`).
//!
//! As in the `webdataset` package, a member `dir/000123.jpg` has the key `dir/000123` and
//! the extension `jpg` (the key ends at the first `.` of the file name, so `a.seg.png` is key
//! `a`, extension `seg.png`); consecutive members with one key form a sample. A sample's image
//! is its first member with an image extension (`jpg`, `jpeg`, `png`, `webp`, `gif`, `bmp`,
//! `tif`, `tiff`), its caption its `.txt` member, else the `caption` (or `text`) string of its
//! `.json` member. Members are read as the archive is read: a shard of any size holds at most
//! a few dozen samples in memory.
//!
//! ```no_run
//! for sample in clip_wgpu::shards::Shard::open("shard-000000.tar")? {
//!     let s = sample?;
//!     println!("{} {:?} {:?}", s.key, s.image.map(|(ext, b)| (ext, b.len())), s.caption);
//! }
//! # Ok::<(), clip_wgpu::Error>(())
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};

use crate::error::{Error, Result};
use crate::preprocess::Limits;

/// Extensions of the members taken as a sample's image (lower case, the last part of the
/// member's extension).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Whether `path` names a WebDataset shard (`.tar`, any case).
pub fn is_shard(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("tar"))
}

/// One sample of a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The shard it comes from.
    pub shard: PathBuf,
    /// The sample's key (the member names up to the first `.` of the file name).
    pub key: String,
    /// Its image: extension and encoded bytes; `None` when it has no image member.
    pub image: Option<(String, Vec<u8>)>,
    /// Its caption: the `.txt` member, else the `.json` member's `caption` or `text`.
    pub caption: Option<String>,
    /// The extensions of all its members, in archive order (for messages).
    pub members: Vec<String>,
    /// Why its image cannot be used though it has one (a member over the size limit).
    pub error: Option<String>,
}

impl Sample {
    /// The image bytes, or an error naming the sample (no image member, or one too large).
    pub fn image_bytes(&self) -> Result<&[u8]> {
        if let Some(e) = &self.error {
            return Err(Error::Io { path: self.path_name(), msg: e.clone() });
        }
        match &self.image {
            Some((_, b)) => Ok(b),
            None => Err(Error::Io {
                path: self.path_name(),
                msg: format!(
                    "no image member in this sample (members: {}; images are {})",
                    if self.members.is_empty() { "none".to_string() } else { self.members.join(", ") },
                    IMAGE_EXTENSIONS.join(", ")
                ),
            }),
        }
    }

    /// `SHARD/KEY`, how messages name the sample.
    pub fn path_name(&self) -> PathBuf {
        PathBuf::from(format!("{}:{}", self.shard.display(), self.key))
    }
}

/// The samples of one shard, read by a background thread as they are consumed. A damaged
/// archive ends the iteration with one error naming the shard.
pub struct Shard {
    rx: Receiver<Result<Sample>>,
}

/// Samples read ahead of the consumer.
const READ_AHEAD: usize = 32;

impl Shard {
    /// Opens a shard (an error now if the file cannot be opened) with the default size limit of
    /// one member ([`Limits::default`]'s `max_file_bytes`).
    pub fn open(path: impl AsRef<Path>) -> Result<Shard> {
        Self::open_with(path, Limits::default().max_file_bytes)
    }

    /// Opens a shard; an image member over `max_member_bytes` is not read (the sample carries
    /// the error).
    pub fn open_with(path: impl AsRef<Path>, max_member_bytes: u64) -> Result<Shard> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| Error::Io { path: path.clone(), msg: e.to_string() })?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(Error::Io { path, msg: "is a directory, not a .tar shard".into() });
        }
        let (tx, rx) = sync_channel(READ_AHEAD);
        std::thread::Builder::new()
            .name("clip-wgpu-shard".into())
            .spawn(move || {
                let r =
                    read_shard(&path, std::io::BufReader::new(file), max_member_bytes, &mut |s| tx.send(Ok(s)).is_ok());
                if let Err(e) = r {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| Error::Invalid(format!("starting the shard reader: {e}")))?;
        Ok(Shard { rx })
    }
}

impl Iterator for Shard {
    type Item = Result<Sample>;
    fn next(&mut self) -> Option<Result<Sample>> {
        self.rx.recv().ok()
    }
}

/// `(key, extension)` of a member name, webdataset's way; `None` for a name without a `.`
/// in its file name.
pub fn split_member(name: &str) -> Option<(&str, &str)> {
    let start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[start..].find('.')? + start;
    (dot > start).then(|| (&name[..dot], &name[dot + 1..]))
}

/// Reads every sample of the archive `r` and hands each to `emit` (which returns false to stop).
pub fn read_shard(
    shard: &Path,
    r: impl Read,
    max_member_bytes: u64,
    emit: &mut dyn FnMut(Sample) -> bool,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| Error::Io { path: shard.into(), msg: format!("reading the shard: {e}") };
    let mut archive = tar::Archive::new(r);
    let mut current: Option<Sample> = None;
    for entry in archive.entries().map_err(|e| err(&e))? {
        let mut entry = entry.map_err(|e| err(&e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(|e| err(&e))?.to_string_lossy().into_owned();
        let Some((key, ext)) = split_member(&name) else { continue };
        if current.as_ref().is_some_and(|s| s.key != key) && !emit(current.take().expect("a current sample")) {
            return Ok(());
        }
        let s = current.get_or_insert_with(|| Sample {
            shard: shard.to_path_buf(),
            key: key.to_string(),
            image: None,
            caption: None,
            members: Vec::new(),
            error: None,
        });
        s.members.push(ext.to_string());
        let last = ext.rsplit('.').next().unwrap_or(ext).to_ascii_lowercase();
        let is_image = IMAGE_EXTENSIONS.contains(&last.as_str());
        let wanted = (is_image && s.image.is_none() && s.error.is_none())
            || (last == "txt" && s.caption.is_none())
            || last == "json";
        if !wanted {
            continue;
        }
        let size = entry.header().size().map_err(|e| err(&e))?;
        if size > max_member_bytes {
            if is_image {
                s.error = Some(format!("member {name} is {size} bytes, over the limit of {max_member_bytes}"));
            }
            continue;
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut bytes).map_err(|e| err(&format!("{name}: {e}")))?;
        if is_image {
            s.image = Some((ext.to_string(), bytes));
        } else if last == "txt" {
            s.caption = Some(String::from_utf8_lossy(&bytes).trim_end_matches(['\r', '\n']).to_string());
        } else if s.caption.is_none() {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                s.caption = ["caption", "text"].iter().find_map(|k| v.get(*k)?.as_str().map(String::from));
            }
        }
    }
    if let Some(s) = current {
        emit(s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn samples(bytes: &[u8], limit: u64) -> Vec<Sample> {
        let mut v = Vec::new();
        read_shard(Path::new("s.tar"), bytes, limit, &mut |s| {
            v.push(s);
            true
        })
        .unwrap();
        v
    }

    #[test]
    fn members_group_by_key_in_webdatasets_way() {
        assert_eq!(split_member("a/b/000.jpg"), Some(("a/b/000", "jpg")));
        assert_eq!(split_member("x.seg.png"), Some(("x", "seg.png")));
        assert_eq!(split_member("dir.d/noext"), None);
        assert_eq!(split_member(".hidden"), None);
        let t = tar_of(&[
            ("000.jpg", b"JPEG"),
            ("000.txt", b"a dog\n"),
            ("000.json", br#"{"caption": "not this"}"#),
            ("001.json", br#"{"caption": "a cat", "url": "x"}"#),
            ("001.PNG", b"PNG"),
            ("002.txt", b"no image"),
        ]);
        let s = samples(&t, 1 << 20);
        let keys: Vec<&str> = s.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["000", "001", "002"]);
        assert_eq!(s[0].image, Some(("jpg".into(), b"JPEG".to_vec())));
        assert_eq!(s[0].caption.as_deref(), Some("a dog"));
        assert_eq!(s[1].caption.as_deref(), Some("a cat"));
        assert_eq!(s[1].image.as_ref().unwrap().0, "PNG");
        assert!(s[2].image_bytes().unwrap_err().to_string().contains("s.tar:002: no image member"));
        let s = samples(&tar_of(&[("003.webp", b"0123456789"), ("003.txt", b"x")]), 5);
        assert_eq!(s[0].caption.as_deref(), Some("x"));
        let e = s[0].image_bytes().unwrap_err().to_string();
        assert!(e.contains("003.webp is 10 bytes, over the limit of 5"), "{e}");
    }

    #[test]
    fn a_damaged_shard_is_an_error_naming_it() {
        let mut t = tar_of(&[("000.jpg", &[7u8; 2000])]);
        t.truncate(700);
        let e = read_shard(Path::new("bad.tar"), &t[..], 1 << 20, &mut |_| true).unwrap_err().to_string();
        assert!(e.starts_with("bad.tar: reading the shard"), "{e}");
        assert!(Shard::open("/nonexistent/x.tar").err().unwrap().to_string().contains("/nonexistent/x.tar"));
    }
}
