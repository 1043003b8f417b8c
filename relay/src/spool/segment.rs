//! The spool's file format. A segment (`<seq>.spool`, seq in 20 digits so names sort as numbers)
//! is [`MAGIC`] followed by records, only ever appended:
//!
//! | bytes | what |
//! | --- | --- |
//! | 4 | `len`: the payload's length, u32 little-endian |
//! | 4 | CRC-32 (IEEE) of `len`'s four bytes and the payload |
//! | 8 | payload: when the message arrived, ms since the Unix epoch, u64 LE |
//! | 2 | payload: the credential's length, u16 LE; 0 for a platform credential |
//! | n | payload: the credential (the tenant token's SHA-256) |
//! | rest | payload: the body, as it came (UTF-8 JSON) |
//!
//! A crash while appending leaves at most the last record of the last segment incomplete; the
//! checksum also catches one whose bytes reached the disk only in part. [`scan`] stops at the
//! first record that does not check, so nothing after it (and nothing of it) is ever replayed.

/// The first bytes of every segment, with the format's version.
pub const MAGIC: &[u8; 8] = b"VXSPOOL1";
const RECORD_HEADER: usize = 8;
const PAYLOAD_HEADER: usize = 10;

/// One spooled message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub arrived_ms: u64,
    /// The digest of the tenant credential that verified it; `None` for a platform credential.
    pub credential: Option<&'a [u8]>,
    pub body: &'a str,
}

/// Why a record does not check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The file is shorter than the segment header, or starts otherwise.
    NotASegment,
    /// The record's header or payload goes past the end of the file: an append cut short.
    Truncated,
    /// The checksum does not match: bytes that did not all reach the disk.
    Checksum,
    /// It checks, but does not parse (written by something else).
    Malformed,
}

impl Damage {
    pub fn describe(self) -> &'static str {
        match self {
            Self::NotASegment => "not a spool segment",
            Self::Truncated => "record cut short",
            Self::Checksum => "checksum mismatch",
            Self::Malformed => "malformed record",
        }
    }
}

/// What a segment holds: its whole records, the length they end at, and the damage found
/// there, if the file goes on.
#[derive(Debug)]
pub struct Scan<'a> {
    pub entries: Vec<Entry<'a>>,
    pub valid_len: usize,
    pub damage: Option<Damage>,
}

/// The record of `entry`, ready to append.
pub fn encode(entry: &Entry<'_>) -> Vec<u8> {
    let credential = entry.credential.unwrap_or_default();
    let credential_len = u16::try_from(credential.len()).expect("a credential digest is short");
    let len = PAYLOAD_HEADER + credential.len() + entry.body.len();
    let mut record = Vec::with_capacity(RECORD_HEADER + len);
    record.extend_from_slice(&u32::try_from(len).expect("a body is under the body limit").to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(&entry.arrived_ms.to_le_bytes());
    record.extend_from_slice(&credential_len.to_le_bytes());
    record.extend_from_slice(credential);
    record.extend_from_slice(entry.body.as_bytes());
    let crc = checksum(&record[..4], &record[RECORD_HEADER..]);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record
}

fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(payload);
    hasher.finalize()
}

/// Reads the whole records of a segment's bytes, in order, up to the first that does not check.
pub fn scan(bytes: &[u8]) -> Scan<'_> {
    let mut scan = Scan { entries: Vec::new(), valid_len: 0, damage: None };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        scan.damage = Some(Damage::NotASegment);
        return scan;
    }
    let mut at = MAGIC.len();
    scan.valid_len = at;
    while at < bytes.len() {
        match record(&bytes[at..]) {
            Ok((entry, used)) => {
                scan.entries.push(entry);
                at += used;
                scan.valid_len = at;
            }
            Err(damage) => {
                scan.damage = Some(damage);
                break;
            }
        }
    }
    scan
}

/// The record at the start of `bytes` and its length.
fn record(bytes: &[u8]) -> Result<(Entry<'_>, usize), Damage> {
    let header = bytes.get(..RECORD_HEADER).ok_or(Damage::Truncated)?;
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
    let payload = bytes.get(RECORD_HEADER..RECORD_HEADER + len).ok_or(Damage::Truncated)?;
    if checksum(&header[..4], payload) != crc {
        return Err(Damage::Checksum);
    }
    let fixed = payload.get(..PAYLOAD_HEADER).ok_or(Damage::Malformed)?;
    let arrived_ms = u64::from_le_bytes(fixed[..8].try_into().unwrap());
    let credential_len = u16::from_le_bytes(fixed[8..].try_into().unwrap()) as usize;
    let rest = &payload[PAYLOAD_HEADER..];
    let (credential, body) = (rest.get(..credential_len), rest.get(credential_len..));
    let (Some(credential), Some(body)) = (credential, body) else { return Err(Damage::Malformed) };
    let body = std::str::from_utf8(body).map_err(|_| Damage::Malformed)?;
    let credential = (!credential.is_empty()).then_some(credential);
    Ok((Entry { arrived_ms, credential, body }, RECORD_HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for entry in entries {
            bytes.extend(encode(entry));
        }
        bytes
    }

    const DIGEST: [u8; 32] = [7; 32];
    const ENTRIES: [Entry<'static>; 3] = [
        Entry { arrived_ms: 1, credential: None, body: r#"{"message":{"type":"status-update"}}"# },
        Entry { arrived_ms: 2, credential: Some(&DIGEST), body: r#"{"message":{"type":"transcript","x":"é"}}"# },
        Entry { arrived_ms: 3, credential: None, body: "" },
    ];

    #[test]
    fn records_read_back_as_written_in_order() {
        let bytes = segment(&ENTRIES);
        let scan = scan(&bytes);
        assert_eq!(scan.entries, ENTRIES);
        assert_eq!((scan.valid_len, scan.damage), (bytes.len(), None));
    }

    #[test]
    fn a_record_cut_anywhere_is_dropped_whole_and_the_ones_before_are_kept() {
        let whole = segment(&ENTRIES);
        let two = segment(&ENTRIES[..2]).len();
        for cut in two + 1..whole.len() {
            let scan = scan(&whole[..cut]);
            assert_eq!(scan.entries, ENTRIES[..2], "cut at {cut}");
            assert_eq!((scan.valid_len, scan.damage), (two, Some(Damage::Truncated)), "cut at {cut}");
        }
    }

    #[test]
    fn a_changed_byte_stops_the_scan_at_its_record() {
        let whole = segment(&ENTRIES);
        let one = segment(&ENTRIES[..1]).len();
        let two = segment(&ENTRIES[..2]).len();
        // every byte of the second record: its length, its checksum, its payload
        for at in one..two {
            let mut bytes = whole.clone();
            bytes[at] ^= 0x10;
            let scan = scan(&bytes);
            assert_eq!(scan.entries, ENTRIES[..1], "byte {at}");
            assert_eq!(scan.valid_len, one, "byte {at}");
            assert!(matches!(scan.damage, Some(Damage::Checksum | Damage::Truncated)), "byte {at}: {:?}", scan.damage);
        }
    }

    #[test]
    fn a_file_that_is_no_segment_holds_nothing() {
        for bytes in [&b""[..], b"VXSP", b"VXSPOOL2\0\0\0\0"] {
            let scan = scan(bytes);
            assert!(scan.entries.is_empty());
            assert_eq!(scan.damage, Some(Damage::NotASegment));
        }
        let scan = scan(MAGIC);
        assert_eq!((scan.entries.len(), scan.valid_len, scan.damage), (0, MAGIC.len(), None));
    }

    #[test]
    fn a_record_that_checks_but_does_not_parse_is_malformed() {
        // a credential length past the payload, with a correct checksum
        let mut record = encode(&Entry { arrived_ms: 9, credential: None, body: "{}" });
        record[RECORD_HEADER + 8..RECORD_HEADER + 10].copy_from_slice(&500u16.to_le_bytes());
        let crc = checksum(&record[..4], &record[RECORD_HEADER..]);
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        let mut bytes = MAGIC.to_vec();
        bytes.extend(record);
        assert_eq!(scan(&bytes).damage, Some(Damage::Malformed));
    }
}
