//! The backup format: a consistent copy of a whole store at one revision,
//! as newline-delimited JSON (API.md, "Backup format"):
//!
//! ```text
//! {"format":"modelhub-backup","version":1,"revision":N,"createdAt":"RFC 3339"}
//! <one object per line, kinds in order (Realm .. Container), each kind in path order>
//! {"end":true,"objects":COUNT,"crc32":"8 hex digits"}
//! ```
//!
//! An object line is the object's v1beta1 document exactly as `GET`
//! returns it. Where the stored record holds a value the document has no
//! field for (kukeon's runtime-only container fields, the internal-only
//! Space states), the line has one more member, `internal`, carrying it,
//! so that a restore gives back the record as it was. The trailer's crc32
//! covers every byte before the trailer line, so a cut or damaged file is
//! told apart from a whole one.
//!
//! [`Encoder`] writes the format, [`Reader`] reads it a line at a time and
//! checks the trailer at the end, and [`verify`] checks a whole file.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::{BufRead, Read};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::convert::{DecodeError, decode_document, encode, format_time};
use super::types::{self as w, AnyDocument};
use crate::model::{self as m, AnyObject, Kind, Path, validate_stored_object};

/// The `format` of the header line.
pub const FORMAT: &str = "modelhub-backup";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// The media type of a backup.
pub const MEDIA_TYPE: &str = "application/x-ndjson";
/// The longest line a reader accepts (a document is at most the 16 MiB
/// body limit, plus what `internal` carries).
const MAX_LINE: usize = 64 * 1024 * 1024;

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version ([`VERSION`]).
    pub version: u32,
    /// The store's revision: the backup holds every change up to it and
    /// none after.
    pub revision: u64,
    /// When the snapshot was taken (RFC 3339).
    pub created_at: String,
}

/// The last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    /// Always `true`.
    pub end: bool,
    /// How many object lines precede it.
    pub objects: u64,
    /// The CRC-32 (IEEE) of every byte before the trailer line, as 8
    /// lower-case hex digits.
    pub crc32: String,
}

/// Stored values an object's v1beta1 document has no field for.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Internal {
    /// A Space's `status.state` that has no external name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    space_state: Option<String>,
    /// A Container's runtime-only spec fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runtime: Option<Runtime>,
    /// The runtime-only fields of a Cell's `spec.containers`, by index.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    containers: BTreeMap<usize, Runtime>,
    /// `metadata.finalizers`, as backups wrote them before v1beta1
    /// documents had the field (read, never written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    finalizers: Vec<String>,
    /// `metadata.deletionTimestamp`, nanoseconds since the epoch, as
    /// backups wrote it before v1beta1 documents had the field (read,
    /// never written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deletion_timestamp: Option<i128>,
}

/// The runtime-only fields of a container spec (filled by kukeon's runner,
/// never part of a document).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Runtime {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    nested_cgroup_runtime: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cell_cgroup_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    etc_hosts_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    etc_hostname_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cell_profile_name: String,
}

impl Runtime {
    fn of(spec: &m::ContainerSpec) -> Option<Runtime> {
        let r = Runtime {
            nested_cgroup_runtime: spec.nested_cgroup_runtime,
            cell_cgroup_path: spec.cell_cgroup_path.clone(),
            etc_hosts_path: spec.etc_hosts_path.clone(),
            etc_hostname_path: spec.etc_hostname_path.clone(),
            cell_profile_name: spec.cell_profile_name.clone(),
        };
        (r != Runtime::default()).then_some(r)
    }

    fn put(self, spec: &mut m::ContainerSpec) {
        let Runtime {
            nested_cgroup_runtime,
            cell_cgroup_path,
            etc_hosts_path,
            etc_hostname_path,
            cell_profile_name,
        } = self;
        spec.nested_cgroup_runtime = nested_cgroup_runtime;
        spec.cell_cgroup_path = cell_cgroup_path;
        spec.etc_hosts_path = etc_hosts_path;
        spec.etc_hostname_path = etc_hostname_path;
        spec.cell_profile_name = cell_profile_name;
    }
}

impl Internal {
    fn of(obj: &AnyObject) -> Internal {
        let mut internal = Internal::default();
        match obj {
            AnyObject::Space(s) => {
                let state = s.status.state.as_str();
                if w::SpaceState::from_name(state).is_none() {
                    internal.space_state = Some(state.to_string());
                }
            }
            AnyObject::Cell(c) => {
                internal.containers = (c.spec.containers.iter().enumerate())
                    .filter_map(|(i, spec)| Some((i, Runtime::of(spec)?)))
                    .collect();
            }
            AnyObject::Container(c) => internal.runtime = Runtime::of(&c.spec),
            AnyObject::Realm(_) | AnyObject::Stack(_) => {}
        }
        internal
    }

    fn is_empty(&self) -> bool {
        *self == Internal::default()
    }

    /// Puts the carried values back into `obj`.
    fn restore(self, obj: &mut AnyObject) -> Result<(), String> {
        let Internal {
            space_state,
            runtime,
            containers,
            finalizers,
            deletion_timestamp,
        } = self;
        let kind = obj.kind();
        if !finalizers.is_empty() {
            obj.meta_mut().finalizers = finalizers;
        }
        if deletion_timestamp.is_some() {
            obj.meta_mut().deletion_timestamp = deletion_timestamp;
        }
        let misplaced =
            |member: &str| Err(format!("internal.{member} does not belong to a {kind}"));
        if let Some(state) = space_state {
            let AnyObject::Space(s) = obj else {
                return misplaced("spaceState");
            };
            s.status.state = m::SpaceState::from_name(&state)
                .ok_or_else(|| format!("internal.spaceState: unknown state {state:?}"))?;
        }
        if let Some(runtime) = runtime {
            let AnyObject::Container(c) = obj else {
                return misplaced("runtime");
            };
            runtime.put(&mut c.spec);
        }
        if !containers.is_empty() {
            let AnyObject::Cell(c) = obj else {
                return misplaced("containers");
            };
            for (i, runtime) in containers {
                let spec = c.spec.containers.get_mut(i).ok_or_else(|| {
                    format!("internal.containers: the cell has no spec.containers[{i}]")
                })?;
                runtime.put(spec);
            }
        }
        Ok(())
    }
}

/// An object line: the document, then `internal` if there is anything to
/// carry.
#[derive(Serialize)]
struct Line {
    #[serde(flatten)]
    document: AnyDocument,
    #[serde(skip_serializing_if = "Internal::is_empty")]
    internal: Internal,
}

/// Appends one line to `out`: `value` as JSON and a newline.
fn push_line(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(&mut *out, value).expect("backup lines serialize");
    out.push(b'\n');
}

/// Writes a backup: the header, object lines and the trailer, each
/// appended to a caller's buffer, while counting and summing them.
pub struct Encoder {
    crc: crc32fast::Hasher,
    objects: u64,
}

impl Encoder {
    /// Starts the backup of a store at `revision`, taken at `created`
    /// (nanoseconds since the epoch): appends the header line.
    pub fn start(revision: u64, created: m::Timestamp, out: &mut Vec<u8>) -> Encoder {
        let mut encoder = Encoder {
            crc: crc32fast::Hasher::new(),
            objects: 0,
        };
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            revision,
            created_at: format_time(Some(created)),
        };
        encoder.summed(out, |out| push_line(out, &header));
        encoder
    }

    /// Appends one object's line.
    pub fn object(&mut self, obj: &AnyObject, out: &mut Vec<u8>) {
        let line = Line {
            document: encode(obj),
            internal: Internal::of(obj),
        };
        self.summed(out, |out| push_line(out, &line));
        self.objects += 1;
    }

    /// Appends the trailer line: the backup is complete.
    pub fn finish(self, out: &mut Vec<u8>) {
        let trailer = Trailer {
            end: true,
            objects: self.objects,
            crc32: hex(self.crc.finalize()),
        };
        push_line(out, &trailer);
    }

    fn summed(&mut self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        let from = out.len();
        write(out);
        self.crc.update(&out[from..]);
    }
}

fn hex(crc: u32) -> String {
    format!("{crc:08x}")
}

/// Why a backup cannot be used.
#[derive(Debug)]
pub enum BackupError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file ends before its trailer.
    Truncated(String),
    /// The trailer does not match what precedes it.
    Damaged(String),
    /// Not a backup, or one of a format version this build cannot read.
    Unsupported(String),
    /// A line is not what the format says (an object that does not decode
    /// or validate, out of order, without its parent).
    Invalid {
        /// The line's number, from 1.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Io(e) => write!(f, "cannot read the backup: {e}"),
            BackupError::Truncated(m) => write!(f, "the backup is truncated: {m}"),
            BackupError::Damaged(m) => write!(f, "the backup is damaged: {m}"),
            BackupError::Unsupported(m) => f.write_str(m),
            BackupError::Invalid { line, message } => {
                write!(f, "line {line} of the backup: {message}")
            }
        }
    }
}

impl std::error::Error for BackupError {}

impl From<std::io::Error> for BackupError {
    fn from(e: std::io::Error) -> Self {
        BackupError::Io(e)
    }
}

/// How a line read ended.
enum Got {
    /// A whole line (its newline removed).
    Line,
    /// Nothing left.
    Eof,
    /// The input ends inside a line.
    Cut,
}

fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<Got, BackupError> {
    buf.clear();
    let n = input
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(BackupError::Io)?;
    if n == 0 {
        Ok(Got::Eof)
    } else if buf.last() == Some(&b'\n') {
        buf.pop();
        Ok(Got::Line)
    } else if buf.len() > MAX_LINE {
        Err(BackupError::Damaged(format!(
            "a line is longer than {} MiB",
            MAX_LINE >> 20
        )))
    } else {
        Ok(Got::Cut)
    }
}

/// Reads a backup a line at a time: the header when opened, then object
/// lines, then checks the trailer (count and checksum) once the input ends.
/// Nothing it hands out is known to be intact until [`Reader::next_line`]
/// has answered `None`.
pub struct Reader<R> {
    input: R,
    header: Header,
    crc: crc32fast::Hasher,
    objects: u64,
    /// The number of the line in `current`.
    line: u64,
    /// The line last handed out.
    current: Vec<u8>,
    /// The line read ahead: the trailer if the input ends after it.
    ahead: Vec<u8>,
    /// Where the next line is read into.
    spare: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the header line.
    pub fn open(mut input: R) -> Result<Reader<R>, BackupError> {
        let mut first = Vec::new();
        match read_line(&mut input, &mut first)? {
            Got::Line => {}
            Got::Eof => return Err(BackupError::Truncated("the file is empty".into())),
            Got::Cut => {
                return Err(BackupError::Truncated(
                    "the file ends inside its first line".into(),
                ));
            }
        }
        let not_a_backup = |why: String| {
            BackupError::Unsupported(format!("not a modelhub backup: its first line {why}"))
        };
        // The format and version first: a newer header may have other fields.
        let value: Value = serde_json::from_slice(&first)
            .map_err(|e| not_a_backup(format!("is not JSON ({e})")))?;
        if value["format"] != FORMAT {
            return Err(not_a_backup(format!(
                "has format {}, not {FORMAT:?}",
                value["format"]
            )));
        }
        if value["version"] != VERSION {
            return Err(BackupError::Unsupported(format!(
                "the backup is of format version {}; this build reads version {VERSION} \
                 (restore it with the modelhub that wrote it, or a newer one)",
                value["version"]
            )));
        }
        let header: Header = serde_json::from_value(value)
            .map_err(|e| not_a_backup(format!("is not a backup header ({e})")))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&first);
        crc.update(b"\n");
        let mut reader = Reader {
            input,
            header,
            crc,
            objects: 0,
            line: 1,
            current: Vec::new(),
            ahead: Vec::new(),
            spare: Vec::new(),
            done: false,
        };
        match read_line(&mut reader.input, &mut reader.ahead)? {
            Got::Line => Ok(reader),
            Got::Eof | Got::Cut => Err(reader.truncated(1)),
        }
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// How many object lines have been read.
    pub fn objects(&self) -> u64 {
        self.objects
    }

    /// The number of the line [`Reader::next_line`] answered last.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The file ends after `lines` whole lines, none of them a trailer.
    fn truncated(&self, lines: u64) -> BackupError {
        BackupError::Truncated(format!(
            "it ends after line {lines} without its trailer line (an interrupted download or \
             an incomplete copy)"
        ))
    }

    /// The next object line (without its newline), or `None` once the
    /// input has ended with a trailer that matches everything before it.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, BackupError> {
        if self.done {
            return Ok(None);
        }
        match read_line(&mut self.input, &mut self.spare)? {
            Got::Line => {}
            Got::Cut => return Err(self.truncated(self.line + 1)),
            Got::Eof => {
                self.check_trailer()?;
                self.done = true;
                return Ok(None);
            }
        }
        // What was read ahead is not the last line: an object line.
        std::mem::swap(&mut self.current, &mut self.ahead);
        std::mem::swap(&mut self.ahead, &mut self.spare);
        self.crc.update(&self.current);
        self.crc.update(b"\n");
        self.objects += 1;
        self.line += 1;
        Ok(Some(&self.current))
    }

    /// The next object, decoded, or `None` at a verified end.
    pub fn next_object(&mut self) -> Result<Option<AnyObject>, BackupError> {
        let line = match self.next_line()? {
            Some(line) => decode_line(line),
            None => return Ok(None),
        };
        line.map(Some).map_err(|message| BackupError::Invalid {
            line: self.line,
            message,
        })
    }

    fn check_trailer(&self) -> Result<(), BackupError> {
        let trailer: Trailer = match serde_json::from_slice(&self.ahead) {
            Ok(t) => t,
            Err(_) if serde_json::from_slice::<Trailer>(&self.current).is_ok() => {
                return Err(BackupError::Damaged(
                    "there is more after its trailer line".into(),
                ));
            }
            Err(_) if !self.ahead.starts_with(b"{\"end\"") => {
                return Err(self.truncated(self.line + 1));
            }
            Err(e) => {
                return Err(BackupError::Damaged(format!(
                    "its trailer line does not read ({e})"
                )));
            }
        };
        if !trailer.end {
            return Err(BackupError::Damaged("its trailer says end: false".into()));
        }
        let sum = hex(self.crc.clone().finalize());
        if trailer.crc32 != sum {
            return Err(BackupError::Damaged(format!(
                "checksum mismatch: the trailer says crc32 {}, the content sums to {sum}",
                trailer.crc32
            )));
        }
        if trailer.objects != self.objects {
            return Err(BackupError::Damaged(format!(
                "the trailer counts {} objects, the file holds {}",
                trailer.objects, self.objects
            )));
        }
        Ok(())
    }
}

/// Reads one object line.
pub fn decode_line(line: &[u8]) -> Result<AnyObject, String> {
    let mut value: Value =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON document: {e}"))?;
    let internal = match value.as_object_mut().and_then(|o| o.remove("internal")) {
        Some(v) => serde_json::from_value::<Internal>(v).map_err(|e| format!("internal: {e}"))?,
        None => Internal::default(),
    };
    let mut obj = decode_document(value).map_err(|e| match e {
        DecodeError::BadRequest {
            field: Some(field),
            message,
        } => format!("{field}: {message}"),
        e => e.to_string(),
    })?;
    internal.restore(&mut obj)?;
    Ok(obj)
}

/// What a verified backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The header.
    pub header: Header,
    /// How many objects.
    pub objects: u64,
}

/// Checks a whole backup before anything is built from it, reading it
/// twice (`open` gives the input again): first its framing (trailer, count,
/// checksum), so that damage is reported as such, then every object: it
/// decodes, validates, comes in order (kinds from Realm down, each kind in
/// path order, no path twice) after its parent, and its `resourceVersion`
/// is in `1..=revision`.
pub fn verify<R: BufRead>(
    mut open: impl FnMut() -> std::io::Result<R>,
) -> Result<Summary, BackupError> {
    let mut reader = Reader::open(open()?)?;
    while reader.next_line()?.is_some() {}
    let mut reader = Reader::open(open()?)?;
    let revision = reader.header().revision;
    let mut parents: HashSet<Path> = HashSet::new();
    let mut last: Option<Path> = None;
    while let Some(obj) = reader.next_object()? {
        let invalid = |message: String| BackupError::Invalid {
            line: reader.line(),
            message,
        };
        let path = obj.path();
        if let Some(last) = &last
            && *last >= path
        {
            return Err(invalid(format!(
                "{path} comes after {last}: objects are in kind order, each kind in path order, \
                 each path once"
            )));
        }
        if let Some(parent) = path.parent()
            && !parents.contains(&parent)
        {
            return Err(invalid(format!(
                "{path}: its parent {parent} is not in the backup before it"
            )));
        }
        let rv = obj.meta().resource_version;
        if rv == 0 || rv > revision {
            return Err(invalid(format!(
                "{path}: resourceVersion {rv} is not in 1..={revision} (the backup's revision)"
            )));
        }
        validate_stored_object(&mut obj.clone()).map_err(|e| invalid(format!("{path}: {e}")))?;
        if path.kind() != Kind::Container {
            parents.insert(path.clone());
        }
        last = Some(path);
    }
    Ok(Summary {
        header: reader.header().clone(),
        objects: reader.objects(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::samples;

    /// A backup of `objects` at `revision`.
    fn backup(revision: u64, objects: &[AnyObject]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = Encoder::start(revision, 1_700_000_000_000_000_000, &mut out);
        for o in objects {
            e.object(o, &mut out);
        }
        e.finish(&mut out);
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<AnyObject>, BackupError> {
        let mut r = Reader::open(bytes)?;
        let mut out = Vec::new();
        while let Some(o) = r.next_object()? {
            out.push(o);
        }
        Ok(out)
    }

    fn check(bytes: &[u8]) -> Result<Summary, BackupError> {
        verify(|| Ok(bytes))
    }

    #[test]
    fn every_stored_field_round_trips() {
        // The samples set every field, the runtime-only ones and an
        // internal-only Space state included.
        let objects = samples();
        let bytes = backup(42, &objects);
        assert_eq!(read_all(&bytes).unwrap(), objects);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains(r#""internal":{"spaceState":"Creating"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""finalizers":["kukeon.io/runtime","example.com/backup"]"#),
            "{text}"
        );
        assert!(text.contains(r#""cellProfileName":"profile""#), "{text}");
    }

    #[test]
    fn finalizers_of_older_backups_are_read_from_internal() {
        let mut obj = samples().remove(0);
        let want = obj.clone();
        obj.meta_mut().finalizers.clear();
        obj.meta_mut().deletion_timestamp = None;
        let internal = Internal {
            finalizers: want.meta().finalizers.clone(),
            deletion_timestamp: want.meta().deletion_timestamp,
            ..Internal::default()
        };
        internal.restore(&mut obj).unwrap();
        assert_eq!(obj, want);
    }

    #[test]
    fn an_object_line_is_the_document_get_returns() {
        let obj = samples().remove(0);
        assert!(Internal::of(&obj).is_empty());
        let mut out = Vec::new();
        Encoder::start(1, 0, &mut Vec::new()).object(&obj, &mut out);
        let mut want = serde_json::to_vec(&encode(&obj)).unwrap();
        want.push(b'\n');
        assert_eq!(out, want);
    }

    #[test]
    fn the_header_and_trailer_frame_the_objects() {
        let bytes = backup(7, &samples()[..1]);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            r#"{"format":"modelhub-backup","version":1,"revision":7,"createdAt":"2023-11-14T22:13:20Z"}"#
        );
        let before = text.len() - lines[2].len() - 1;
        let crc = hex(crc32fast::hash(&bytes[..before]));
        assert_eq!(
            lines[2],
            format!(r#"{{"end":true,"objects":1,"crc32":"{crc}"}}"#)
        );
        let r = Reader::open(bytes.as_slice()).unwrap();
        assert_eq!(r.header().revision, 7);
        assert_eq!(backup(3, &[]).iter().filter(|b| **b == b'\n').count(), 2);
        assert!(read_all(&backup(3, &[])).unwrap().is_empty());
    }

    #[test]
    fn a_cut_file_is_truncated_wherever_it_is_cut() {
        let bytes = backup(42, &samples());
        for cut in 0..bytes.len() {
            let err = read_all(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, BackupError::Truncated(_)),
                "cut at {cut}: {err}"
            );
        }
        let err = read_all(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn a_changed_byte_is_damage() {
        let bytes = backup(42, &samples());
        let header_end = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
        let trailer_start = bytes[..bytes.len() - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .unwrap()
            + 1;
        for at in (header_end..trailer_start).step_by(7) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x20;
            let err = check(&flipped).unwrap_err();
            assert!(
                matches!(err, BackupError::Damaged(_) | BackupError::Truncated(_)),
                "flip at {at}: {err}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[header_end + 30] ^= 0x01;
        let err = check(&flipped).unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains("checksum"), "{err}");
        // The trailer's own count.
        let text = String::from_utf8(bytes).unwrap();
        let n = samples().len();
        let miscounted = text.replace(
            &format!(r#""objects":{n},"#),
            &format!(r#""objects":{},"#, n + 1),
        );
        let err = check(miscounted.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(&format!("counts {} objects", n + 1)), "{err}");
    }

    #[test]
    fn anything_after_the_trailer_is_refused() {
        let mut bytes = backup(42, &samples());
        bytes.extend_from_slice(b"{}\n");
        let err = check(&bytes).unwrap_err().to_string();
        assert!(err.contains("more after its trailer"), "{err}");
    }

    #[test]
    fn other_files_and_versions_are_not_backups() {
        for (text, want) in [
            ("{\"kind\":\"Realm\"}\n", "not a modelhub backup"),
            (
                "{\"format\":\"other\",\"version\":1,\"revision\":1,\"createdAt\":\"\"}\n",
                "not a modelhub backup",
            ),
            (
                "{\"format\":\"modelhub-backup\",\"version\":2,\"revision\":1,\"createdAt\":\"\"}\n",
                "version 2",
            ),
        ] {
            let err = Reader::open(text.as_bytes()).err().unwrap().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn verify_checks_every_object() {
        // A realm, space, stack, cell and container, each at revision 42.
        let objects = samples();
        let summary = check(&backup(42, &objects)).unwrap();
        assert_eq!(summary.objects, objects.len() as u64);
        assert_eq!(summary.header.revision, 42);
        // A child before its parent.
        let mut reversed = objects.clone();
        reversed.reverse();
        let err = check(&backup(42, &reversed)).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("before it"), "{err}");
        // A path twice.
        let mut twice = objects.clone();
        twice.insert(1, objects[0].clone());
        let err = check(&backup(42, &twice)).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("kind order"),
            "{err}"
        );
        // A missing parent.
        let err = check(&backup(42, &objects[1..])).unwrap_err().to_string();
        assert!(err.contains("parent Realm"), "{err}");
        // A revision newer than the backup's.
        let err = check(&backup(41, &objects)).unwrap_err().to_string();
        assert!(err.contains("resourceVersion 42"), "{err}");
        // An invalid object.
        let mut bad = objects.clone();
        bad[0].meta_mut().labels.insert(String::new(), "v".into());
        let err = check(&backup(42, &bad)).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("metadata.labels"),
            "{err}"
        );
    }
}
