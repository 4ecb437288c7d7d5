//! External tensor data (`data_location == EXTERNAL`), confined to the model's folder.
//!
//! A model file is untrusted, so the `location` it names is only followed when it stays inside the folder that holds
//! the model: absolute paths and `..` components are rejected, and the resolved path (symlinks followed) must still
//! lie inside the folder. `offset` and `length` are checked against the file's size before any buffer is allocated,
//! so a model cannot make the importer allocate more than the file on disk justifies.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::ImportError;
use super::proto::TensorProto;

fn err(tensor: &str, why: impl std::fmt::Display) -> ImportError {
    ImportError::ExternalData(format!("tensor `{tensor}`: {why}"))
}

/// Resolves `location` inside `base_dir`, refusing anything that escapes it.
pub fn confined_path(
    base_dir: &Path,
    location: &str,
    tensor: &str,
) -> Result<PathBuf, ImportError> {
    if location.is_empty() {
        return Err(err(tensor, "external data has no location"));
    }
    let rel = Path::new(location);
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(err(
                    tensor,
                    format!("location `{location}` leaves the model's folder (`..`)"),
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(err(
                    tensor,
                    format!("location `{location}` is an absolute path"),
                ));
            }
        }
    }
    // Windows-style absolute paths are refused on every platform.
    if location.starts_with('\\') || location.as_bytes().get(1) == Some(&b':') {
        return Err(err(
            tensor,
            format!("location `{location}` is an absolute path"),
        ));
    }
    let base = base_dir.canonicalize().map_err(|e| {
        err(
            tensor,
            format!("cannot resolve {}: {e}", base_dir.display()),
        )
    })?;
    let joined = base.join(rel);
    let resolved = joined
        .canonicalize()
        .map_err(|e| err(tensor, format!("cannot open {}: {e}", joined.display())))?;
    if !resolved.starts_with(&base) {
        return Err(err(
            tensor,
            format!(
                "location `{location}` resolves to {}, outside the model's folder",
                resolved.display()
            ),
        ));
    }
    Ok(resolved)
}

/// Reads the raw bytes of an external tensor; `expected` is the byte size its dtype and dims require.
pub fn read_external(
    t: &TensorProto,
    base_dir: Option<&Path>,
    expected: usize,
) -> Result<Vec<u8>, ImportError> {
    let name = if t.name.is_empty() {
        "<unnamed>"
    } else {
        &t.name
    };
    let base_dir = base_dir.ok_or_else(|| {
        err(
            name,
            "the model uses external data but was not loaded from a file",
        )
    })?;
    let (mut location, mut offset, mut length) = (None, 0u64, None);
    for kv in &t.external_data {
        let num = |v: &str| {
            v.trim().parse::<u64>().map_err(|_| {
                err(
                    name,
                    format!("external data `{}` is not a number: {v:?}", kv.key),
                )
            })
        };
        match kv.key.as_str() {
            "location" => location = Some(kv.value.as_str()),
            "offset" => offset = num(&kv.value)?,
            "length" => length = Some(num(&kv.value)?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| err(name, "external data has no location"))?;
    let path = confined_path(base_dir, location, name)?;
    let mut file =
        File::open(&path).map_err(|e| err(name, format!("cannot open {}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| err(name, format!("cannot stat {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(err(name, format!("{} is not a file", path.display())));
    }
    let size = meta.len();
    let length = length.unwrap_or(expected as u64);
    if length != expected as u64 {
        return Err(err(
            name,
            format!("external data length is {length} bytes but the tensor needs {expected}"),
        ));
    }
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(err(
            name,
            format!(
                "external data [{offset}, {offset}+{length}) lies outside {} ({size} bytes)",
                path.display()
            ),
        ));
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| err(name, format!("cannot seek in {}: {e}", path.display())))?;
    let mut buf = vec![0u8; expected];
    file.read_exact(&mut buf)
        .map_err(|e| err(name, format!("cannot read {}: {e}", path.display())))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::StringStringEntryProto;

    fn tmp(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("jiuzhou-ext-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn ext(location: &str, offset: Option<u64>, length: Option<u64>) -> TensorProto {
        let mut kv = vec![StringStringEntryProto {
            key: "location".into(),
            value: location.into(),
        }];
        if let Some(o) = offset {
            kv.push(StringStringEntryProto {
                key: "offset".into(),
                value: o.to_string(),
            });
        }
        if let Some(l) = length {
            kv.push(StringStringEntryProto {
                key: "length".into(),
                value: l.to_string(),
            });
        }
        TensorProto {
            name: "w".into(),
            external_data: kv,
            data_location: 1,
            ..Default::default()
        }
    }

    #[test]
    fn reads_inside_the_folder() {
        let d = tmp("inside");
        std::fs::write(d.join("w.bin"), [0u8, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        let got = read_external(&ext("w.bin", Some(4), Some(4)), Some(&d), 4).unwrap();
        assert_eq!(got, vec![4, 5, 6, 7]);
        let got = read_external(&ext("./w.bin", None, None), Some(&d), 8).unwrap();
        assert_eq!(got.len(), 8);
    }

    #[test]
    fn refuses_to_escape_or_overread() {
        let d = tmp("escape");
        let model_dir = d.join("model");
        std::fs::create_dir_all(&model_dir).unwrap();
        std::fs::write(d.join("secret.bin"), [9u8; 8]).unwrap();
        std::fs::write(model_dir.join("w.bin"), [0u8; 8]).unwrap();
        let secret = d.join("secret.bin");
        let cases = [
            ext("../secret.bin", None, None),
            ext(secret.to_str().unwrap(), None, None),
            ext("w.bin", Some(4), Some(8)),
            ext("w.bin", Some(u64::MAX), Some(8)),
            ext("w.bin", None, Some(1 << 40)),
            ext("missing.bin", None, None),
            ext("", None, None),
        ];
        for c in &cases {
            assert!(read_external(c, Some(&model_dir), 8).is_err(), "{c:?}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&secret, model_dir.join("link.bin")).unwrap();
            let e = read_external(&ext("link.bin", None, None), Some(&model_dir), 8).unwrap_err();
            assert!(e.to_string().contains("outside the model's folder"), "{e}");
        }
        assert!(read_external(&ext("w.bin", None, None), None, 8).is_err());
    }
}
