//! The command sink's state file: pending stop commands, written crash-safe.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A stop command waiting for its time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub(crate) door: String,
    pub(crate) src: IpAddr,
    pub(crate) grant: u64,
    /// When to run it, in milliseconds since the Unix epoch.
    pub(crate) due_ms: u64,
    /// The command with `%IP%` already substituted.
    pub(crate) command: String,
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    pending: Vec<Pending>,
}

/// Reads the file; a missing file is an empty state.
pub(crate) fn load(path: &Path) -> Result<Vec<Pending>, Error> {
    let err = |source| Error::StateFile {
        path: path.to_owned(),
        source,
    };
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let parsed: FileFormat = serde_json::from_str(&text)
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    Ok(parsed.pending)
}

/// Writes the file: a temp file beside it, fsync, rename, fsync of the directory.
pub(crate) fn save(path: &Path, pending: &[Pending]) -> Result<(), Error> {
    let err = |source| Error::StateFile {
        path: path.to_owned(),
        source,
    };
    let data = serde_json::to_vec_pretty(&FileFormat {
        version: 1,
        pending: pending.to_vec(),
    })
    .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let mut tmp: PathBuf = path.to_owned();
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    tmp.set_file_name(name);
    {
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(&data).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable; not fatal where directories cannot be opened.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = std::env::temp_dir().join(format!("knock-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert!(load(&path).unwrap().is_empty());
        let p = vec![Pending {
            door: "ssh".into(),
            src: "2001:db8::2".parse().unwrap(),
            grant: 3,
            due_ms: 1_700_000_000_000,
            command: "echo 'x y'".into(),
        }];
        save(&path, &p).unwrap();
        assert_eq!(load(&path).unwrap(), p);
        fs::write(&path, "garbage").unwrap();
        assert!(matches!(load(&path), Err(Error::StateFile { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
