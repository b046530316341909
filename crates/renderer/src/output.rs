//! Writing heatmaps into the output folder under names the renderer alone chooses.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use protocol::names::{heatmap_file_name, is_heatmap_name};

use crate::error::Error;

/// Most `-N` suffixes tried for one second's stamp before giving up.
const MAX_ATTEMPTS: u32 = 10_000;

/// Writes `png` to `out_dir` as `heatmap_<stamp>.png`, or `heatmap_<stamp>-N.png` if that
/// exists, and returns the name.
///
/// `create_new` makes the choice atomic: two renders in the same second never overwrite
/// each other, even from two renderer processes sharing the folder.
///
/// # Errors
/// [`Error::Write`] if the folder is missing, not writable or full.
pub fn write_heatmap(out_dir: &Path, stamp: &str, png: &[u8]) -> Result<String, Error> {
    for attempt in 0..MAX_ATTEMPTS {
        let name = heatmap_file_name(stamp, attempt);
        let path = out_dir.join(&name);
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(Error::Write { path, source }),
        };
        if let Err(source) = file.write_all(png).and_then(|()| file.sync_data()) {
            // Leave no truncated image behind for the page to show.
            let _ = std::fs::remove_file(&path);
            return Err(Error::Write { path, source });
        }
        return Ok(name);
    }
    Err(Error::Write {
        path: out_dir.to_owned(),
        source: std::io::Error::new(
            ErrorKind::AlreadyExists,
            "every name for this second is taken",
        ),
    })
}

/// The path of an existing heatmap, if `name` has the exact heatmap shape.
///
/// This is the only way a name from a request becomes a path: the shape check rules out
/// separators and `..`, so the result is always directly inside `out_dir`.
pub fn heatmap_path(out_dir: &Path, name: &str) -> Option<PathBuf> {
    is_heatmap_name(name).then(|| out_dir.join(name))
}

/// The local time stamp used in file names: `YYYY-MM-DD_HH-MM-SS`.
pub fn local_stamp(now: chrono::DateTime<chrono::Local>) -> String {
    now.format("%Y-%m-%d_%H-%M-%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions_get_a_suffix() {
        let dir = std::env::temp_dir().join(format!("heatmap-output-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stamp = "2026-11-29_19-30-05";
        let names: Vec<String> = (0..3)
            .map(|_| write_heatmap(&dir, stamp, b"png").unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "heatmap_2026-11-29_19-30-05.png",
                "heatmap_2026-11-29_19-30-05-1.png",
                "heatmap_2026-11-29_19-30-05-2.png"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_folder_is_a_clear_error() {
        let missing = std::env::temp_dir().join("heatmap-output-test-missing/nested");
        let err = write_heatmap(&missing, "2026-11-29_19-30-05", b"png").unwrap_err();
        assert!(err.to_string().starts_with("cannot write"), "{err}");
    }

    #[test]
    fn request_names_cannot_leave_the_folder() {
        let dir = Path::new("/srv/out");
        assert_eq!(
            heatmap_path(dir, "heatmap_2026-11-29_19-30-05.png"),
            Some(dir.join("heatmap_2026-11-29_19-30-05.png"))
        );
        assert_eq!(heatmap_path(dir, "../etc/passwd"), None);
        assert_eq!(heatmap_path(dir, "/etc/passwd"), None);
    }
}
