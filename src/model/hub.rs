//! Where a checkpoint named on the command line or in the Python API is found: a path as it
//! is, or a model name (a preset's short name such as `ViT-L-14`, or a Hugging Face Hub
//! repository such as `openai/clip-vit-large-patch14`) looked up in the Hugging Face cache.
//! Nothing here downloads: the command line adds that (feature `download`).

use std::path::{Path, PathBuf};

/// What a `--model` / `model=` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// An existing file or directory: used as it is.
    Path(PathBuf),
    /// A Hub repository (`owner/name`), from a preset or given as such.
    Repo(String),
    /// Neither an existing path nor a model name: loading it reports the missing path.
    Missing(PathBuf),
}

/// The value `arg` (or, without one, the default checkpoint's repository).
pub fn named(arg: Option<&Path>) -> Named {
    match arg {
        None => Named::Repo(super::presets::DEFAULT.repo.to_string()),
        // an existing path always wins; a name that is no path is looked up as a model name
        Some(p) if p.exists() => Named::Path(p.to_path_buf()),
        Some(p) => match hub_repo(&p.to_string_lossy()) {
            Some(repo) => Named::Repo(repo),
            None => Named::Missing(p.to_path_buf()),
        },
    }
}

/// The Hub repository a model name stands for: a preset (`ViT-L-14`,
/// `openai/clip-vit-large-patch14`), else any `owner/name` (one `/`, no file extension, no
/// leading `.` or `/`).
pub fn hub_repo(name: &str) -> Option<String> {
    if let Some(p) = super::presets::find(name) {
        return Some(p.repo.to_string());
    }
    let (owner, repo) = name.split_once('/')?;
    let part = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (part(owner) && part(repo) && !repo.ends_with(".safetensors") && !repo.ends_with(".bin")).then(|| name.to_string())
}

/// The Hugging Face cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (`None` without `HOME`).
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("HF_HUB_CACHE").map(PathBuf::from).or_else(|| {
        std::env::var_os("HF_HOME")
            .map(|h| PathBuf::from(h).join("hub"))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub")))
    })
}

/// `repo`'s folder in the cache `hub` (`models--owner--name`).
pub fn repo_dir(hub: &Path, repo: &str) -> PathBuf {
    hub.join(format!("models--{}", repo.replace('/', "--")))
}

/// The newest snapshot of `repo` in the cache `hub` that holds both `model.safetensors` and
/// `config.json`.
pub fn cached_snapshot(hub: &Path, repo: &str) -> Option<PathBuf> {
    let rd = std::fs::read_dir(repo_dir(hub, repo).join("snapshots")).ok()?;
    let mut found: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.safetensors").is_file() && p.join("config.json").is_file())
        .collect();
    found.sort();
    found.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(hub_repo("ViT-L-14").as_deref(), Some("openai/clip-vit-large-patch14"));
        assert_eq!(hub_repo("someone/clip-x").as_deref(), Some("someone/clip-x"));
        assert_eq!(hub_repo("dir/model.safetensors"), None);
        assert_eq!(hub_repo("./x"), None);
        assert_eq!(hub_repo("a/b/c"), None);
        assert_eq!(named(Some(Path::new("no/such.safetensors"))), Named::Missing("no/such.safetensors".into()));
        assert_eq!(named(Some(Path::new("src"))), Named::Path("src".into()));
        assert_eq!(named(None), Named::Repo(super::super::presets::DEFAULT.repo.to_string()));
    }

    #[test]
    fn the_newest_complete_snapshot_is_found() {
        let hub = tempfile::tempdir().unwrap();
        let snaps = repo_dir(hub.path(), "o/m").join("snapshots");
        for (name, complete) in [("aaa", true), ("bbb", true), ("ccc", false)] {
            let d = snaps.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("model.safetensors"), b"x").unwrap();
            if complete {
                std::fs::write(d.join("config.json"), b"{}").unwrap();
            }
        }
        assert_eq!(cached_snapshot(hub.path(), "o/m"), Some(snaps.join("bbb")));
        assert_eq!(cached_snapshot(hub.path(), "o/other"), None);
    }
}
