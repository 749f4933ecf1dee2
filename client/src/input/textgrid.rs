//! Praat TextGrid files in the text format, as described in the Praat manual
//! (<https://www.fon.hum.uva.nl/praat/manual/TextGrid_file_formats.html>).
//!
//! The reader follows Praat's own rule for text files: only the values count
//! (numbers, quoted strings and `<exists>` flags), and the labels around them
//! (`xmin =`, `intervals [3]:`) are skipped. So the long format and the short
//! format both parse, with tabs or spaces, LF or CRLF line endings, and
//! comments after `!`. Strings may span lines, and a doubled quote `""`
//! inside a string is one quote. Files may be UTF-8 (with or without a byte
//! order mark) or UTF-16 with a byte order mark, the encodings Praat writes.
//!
//! For transcripts, each file contains one speaker: [`read_speaker_file`] takes
//! the speaker from the file name (`day1_consultation01_doctor.TextGrid` is
//! `doctor`), never from the tier name, and skips intervals whose text is
//! empty or only whitespace. Tags such as `<UNIN/>` stay in the text.

use std::path::Path;

use sealcast_protocol::redact::Redacted;

use super::{seconds_to_ms, InputError, InputSegment};

/// A parsed TextGrid.
#[derive(Debug, Clone, PartialEq)]
pub struct TextGrid {
    /// Start of the time domain, in seconds.
    pub xmin: f64,
    /// End of the time domain, in seconds.
    pub xmax: f64,
    /// Tiers in file order.
    pub tiers: Vec<Tier>,
}

/// One tier of a TextGrid.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    /// Tier name, for example `Speaker`.
    pub name: String,
    /// The tier's intervals or points.
    pub content: TierContent,
}

/// The items of a tier.
#[derive(Debug, Clone, PartialEq)]
pub enum TierContent {
    /// An `IntervalTier`.
    Intervals(Vec<Interval>),
    /// A `TextTier` (point tier).
    Points(Vec<Point>),
}

/// One interval of an interval tier. `Debug` leaves the text out.
#[derive(Clone, PartialEq)]
pub struct Interval {
    /// Start, in seconds.
    pub xmin: f64,
    /// End, in seconds.
    pub xmax: f64,
    /// Label text, with `""` escapes resolved.
    pub text: String,
    /// Line of the interval's `text` value, from 1.
    pub line: usize,
}

impl std::fmt::Debug for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interval")
            .field("xmin", &self.xmin)
            .field("xmax", &self.xmax)
            .field("text", &Redacted)
            .field("line", &self.line)
            .finish()
    }
}

/// One point of a point tier. `Debug` leaves the label out.
#[derive(Clone, PartialEq)]
pub struct Point {
    /// Time, in seconds.
    pub time: f64,
    /// Label text.
    pub mark: String,
}

impl std::fmt::Debug for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Point")
            .field("time", &self.time)
            .field("mark", &Redacted)
            .finish()
    }
}

/// A TextGrid syntax error at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Line number, from 1.
    pub line: usize,
    /// Description of the error.
    pub reason: String,
}

/// Reads a speaker's TextGrid file into final segments, one per non-empty interval.
pub fn read_speaker_file(path: &Path) -> Result<Vec<InputSegment>, InputError> {
    let speaker = speaker_from_file_name(path).ok_or_else(|| InputError::NoSpeaker {
        path: path.to_path_buf(),
    })?;
    let bytes = std::fs::read(path).map_err(|source| InputError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let syntax_error = |err: SyntaxError| InputError::TextGrid {
        path: path.to_path_buf(),
        line: err.line,
        reason: err.reason,
    };

    let text = decode_text(&bytes).map_err(syntax_error)?;
    let grid = parse(&text).map_err(syntax_error)?;
    let intervals = single_interval_tier(&grid).map_err(|count| InputError::TierCount {
        path: path.to_path_buf(),
        count,
    })?;
    intervals_to_segments(intervals, &speaker).map_err(syntax_error)
}

/// Takes the speaker from a file name: the part of the stem after the last
/// `_`, in lower case. Returns `None` when the stem has no `_` or ends with one.
pub fn speaker_from_file_name(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let (_, speaker) = stem.rsplit_once('_')?;
    if speaker.is_empty() {
        return None;
    }
    Some(speaker.to_lowercase())
}

/// Parses the text of a TextGrid file in the long or short text format.
pub fn parse(text: &str) -> Result<TextGrid, SyntaxError> {
    let tokens = Lexer::new(text).tokenize()?;
    let mut parser = Parser {
        tokens,
        position: 0,
        last_line: text.lines().count().max(1),
    };
    let grid = parser.text_grid()?;
    parser.expect_end()?;
    Ok(grid)
}

fn single_interval_tier(grid: &TextGrid) -> Result<&[Interval], usize> {
    let interval_tiers: Vec<&[Interval]> = grid
        .tiers
        .iter()
        .filter_map(|tier| match &tier.content {
            TierContent::Intervals(intervals) => Some(intervals.as_slice()),
            TierContent::Points(_) => None,
        })
        .collect();
    match interval_tiers.as_slice() {
        [only] => Ok(only),
        other => Err(other.len()),
    }
}

fn intervals_to_segments(
    intervals: &[Interval],
    speaker: &str,
) -> Result<Vec<InputSegment>, SyntaxError> {
    let mut segments = Vec::new();
    for interval in intervals {
        let text = interval.text.trim();
        if text.is_empty() {
            continue;
        }

        let time_error = |what: &str, value: f64| SyntaxError {
            line: interval.line,
            reason: format!("interval {what} {value} is not a time from 0 seconds on"),
        };
        let start_ms =
            seconds_to_ms(interval.xmin).ok_or_else(|| time_error("xmin", interval.xmin))?;
        let end_ms =
            seconds_to_ms(interval.xmax).ok_or_else(|| time_error("xmax", interval.xmax))?;

        segments.push(InputSegment {
            segment_id: None,
            revision: None,
            speaker: speaker.to_string(),
            start_ms,
            end_ms,
            text: text.to_string(),
            is_final: true,
        });
    }
    Ok(segments)
}

/// Decodes file bytes: UTF-16 with a byte order mark, else UTF-8 with an
/// optional byte order mark.
fn decode_text(bytes: &[u8]) -> Result<String, SyntaxError> {
    let utf16 = |big_endian: bool| {
        let units = bytes[2..].chunks(2).map(|pair| match (pair, big_endian) {
            ([high, low], true) => u16::from_be_bytes([*high, *low]),
            ([low, high], false) => u16::from_le_bytes([*low, *high]),
            _ => 0xFFFD,
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|_| SyntaxError {
                line: 1,
                reason: "the file has a UTF-16 byte order mark but invalid UTF-16".into(),
            })
    };
    match bytes {
        [0xFE, 0xFF, ..] => utf16(true),
        [0xFF, 0xFE, ..] => utf16(false),
        _ => {
            let body = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
            String::from_utf8(body.to_vec()).map_err(|err| {
                let line = 1 + body[..err.utf8_error().valid_up_to()]
                    .iter()
                    .filter(|&&byte| byte == b'\n')
                    .count();
                SyntaxError {
                    line,
                    reason: "the file is not valid UTF-8 or UTF-16: save it as UTF-8".into(),
                }
            })
        }
    }
}

/// A value in a TextGrid file, with the label word that preceded it.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    value: Value,
    line: usize,
    label: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(f64),
    Text(String),
    Flag(String),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Number(number) => format!("the number {number}"),
            Value::Text(_) => "a string".to_string(),
            Value::Flag(flag) => format!("the flag <{flag}>"),
        }
    }
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    label: String,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer {
            chars: text.chars().peekable(),
            line: 1,
            label: String::new(),
        }
    }

    fn tokenize(mut self) -> Result<Vec<Token>, SyntaxError> {
        let mut tokens = Vec::new();
        while let Some(&c) = self.chars.peek() {
            let line = self.line;
            let value = match c {
                '"' => Some(Value::Text(self.string()?)),
                '<' => Some(Value::Flag(self.flag()?)),
                '!' => {
                    self.skip_while(|c| c != '\n');
                    None
                }
                '[' => {
                    self.skip_while(|c| c != ']' && c != '\n');
                    None
                }
                c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                    Some(Value::Number(self.number()?))
                }
                c if c.is_whitespace() || c == '=' || c == ':' || c == ']' => {
                    self.bump();
                    None
                }
                _ => {
                    self.word();
                    None
                }
            };
            if let Some(value) = value {
                let label = std::mem::take(&mut self.label);
                tokens.push(Token { value, line, label });
            }
        }
        Ok(tokens)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn skip_while(&mut self, keep_going: impl Fn(char) -> bool) {
        while self.chars.peek().is_some_and(|&c| keep_going(c)) {
            self.bump();
        }
    }

    fn take_while(&mut self, keep_going: impl Fn(char) -> bool) -> String {
        let mut out = String::new();
        while let Some(&c) = self.chars.peek() {
            if !keep_going(c) {
                break;
            }
            out.push(c);
            self.bump();
        }
        out
    }

    /// Reads a label word such as `xmin`, `size` or `tiers?`.
    fn word(&mut self) {
        let word = self
            .take_while(|c| !(c.is_whitespace() || matches!(c, '=' | ':' | '"' | '[' | '<' | '!')));
        self.label = word.trim_end_matches('?').to_string();
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        let start_line = self.line;
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                Some('"') if self.chars.peek() == Some(&'"') => {
                    self.bump();
                    out.push('"');
                }
                Some('"') => return Ok(out.replace("\r\n", "\n")),
                Some(c) => out.push(c),
                None => {
                    return Err(SyntaxError {
                        line: start_line,
                        reason: "string is not closed: a \" is missing".into(),
                    })
                }
            }
        }
    }

    fn flag(&mut self) -> Result<String, SyntaxError> {
        let line = self.line;
        self.bump();
        let flag = self.take_while(|c| c != '>' && c != '\n');
        if self.bump() != Some('>') {
            return Err(SyntaxError {
                line,
                reason: format!("flag <{flag} is not closed: a > is missing"),
            });
        }
        Ok(flag)
    }

    fn number(&mut self) -> Result<f64, SyntaxError> {
        let line = self.line;
        let text = self.take_while(|c| !c.is_whitespace() && c != '!');
        text.parse::<f64>()
            .ok()
            .filter(|number| number.is_finite())
            .ok_or(SyntaxError {
                line,
                reason: format!("{text:?} is not a number"),
            })
    }
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
    last_line: usize,
}

impl Parser {
    fn text_grid(&mut self) -> Result<TextGrid, SyntaxError> {
        let file_type = self.text("the file type \"ooTextFile\"")?;
        if !file_type.starts_with("ooTextFile") {
            return Err(self.error_before(format!(
                "file type is {file_type:?}, expected \"ooTextFile\": this is not a Praat text file"
            )));
        }
        let class = self.text("the object class \"TextGrid\"")?;
        if class != "TextGrid" {
            return Err(
                self.error_before(format!("object class is {class:?}, expected \"TextGrid\""))
            );
        }

        let xmin = self.number("xmin")?;
        let xmax = self.number("xmax")?;
        let tiers_exist = self.flag("<exists> or <absent>")?;
        let mut tiers = Vec::new();
        if tiers_exist == "exists" {
            let count = self.count("the tier count")?;
            for _ in 0..count {
                tiers.push(self.tier()?);
            }
        }
        Ok(TextGrid { xmin, xmax, tiers })
    }

    fn tier(&mut self) -> Result<Tier, SyntaxError> {
        let class = self.text("the tier class")?;
        let name = self.text("the tier name")?;
        self.number("tier xmin")?;
        self.number("tier xmax")?;
        let count = self.count("the item count")?;

        let content = match class.as_str() {
            "IntervalTier" => TierContent::Intervals(self.items(count, Self::interval)?),
            "TextTier" => TierContent::Points(self.items(count, Self::point)?),
            other => {
                return Err(self.error_before(format!(
                    "unknown tier class {other:?}: expected \"IntervalTier\" or \"TextTier\""
                )))
            }
        };
        Ok(Tier { name, content })
    }

    fn items<T>(
        &mut self,
        count: usize,
        item: fn(&mut Self) -> Result<T, SyntaxError>,
    ) -> Result<Vec<T>, SyntaxError> {
        // The count comes from the file, so cap the reservation.
        let mut items = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            items.push(item(self)?);
        }
        Ok(items)
    }

    fn interval(&mut self) -> Result<Interval, SyntaxError> {
        let xmin = self.number("interval xmin")?;
        let xmax = self.number("interval xmax")?;
        let line = self.peek_line();
        let text = self.text("the interval text")?;
        if xmax < xmin {
            return Err(SyntaxError {
                line,
                reason: format!("interval ends at {xmax} s before it starts at {xmin} s"),
            });
        }
        Ok(Interval {
            xmin,
            xmax,
            text,
            line,
        })
    }

    fn point(&mut self) -> Result<Point, SyntaxError> {
        let time = self.number("point time")?;
        let mark = self.text("the point mark")?;
        Ok(Point { time, mark })
    }

    fn next(&mut self, expected: &str) -> Result<Token, SyntaxError> {
        let token = self.tokens.get(self.position).cloned().ok_or(SyntaxError {
            line: self.last_line,
            reason: format!("file ends where {expected} was expected: the file is truncated"),
        })?;
        self.position += 1;
        Ok(token)
    }

    fn peek_line(&self) -> usize {
        self.tokens
            .get(self.position)
            .map_or(self.last_line, |token| token.line)
    }

    fn mismatch(token: &Token, expected: &str) -> SyntaxError {
        let after = if token.label.is_empty() {
            String::new()
        } else {
            format!(" after {:?}", token.label)
        };
        SyntaxError {
            line: token.line,
            reason: format!(
                "expected {expected}, found {}{after}",
                token.value.describe()
            ),
        }
    }

    fn number(&mut self, expected: &str) -> Result<f64, SyntaxError> {
        let token = self.next(expected)?;
        match token.value {
            Value::Number(number) => Ok(number),
            _ => Err(Self::mismatch(&token, &format!("a number for {expected}"))),
        }
    }

    fn count(&mut self, expected: &str) -> Result<usize, SyntaxError> {
        let token = self.next(expected)?;
        match token.value {
            Value::Number(number) if number >= 0.0 && number.fract() == 0.0 => Ok(number as usize),
            _ => Err(Self::mismatch(
                &token,
                &format!("a whole number for {expected}"),
            )),
        }
    }

    fn text(&mut self, expected: &str) -> Result<String, SyntaxError> {
        let token = self.next(expected)?;
        match token.value {
            Value::Text(text) => Ok(text),
            _ => Err(Self::mismatch(&token, &format!("a string for {expected}"))),
        }
    }

    fn flag(&mut self, expected: &str) -> Result<String, SyntaxError> {
        let token = self.next(expected)?;
        match &token.value {
            Value::Flag(flag) if flag == "exists" || flag == "absent" => Ok(flag.clone()),
            _ => Err(Self::mismatch(&token, expected)),
        }
    }

    fn error_before(&self, reason: String) -> SyntaxError {
        let line = self
            .position
            .checked_sub(1)
            .and_then(|index| self.tokens.get(index))
            .map_or(1, |token| token.line);
        SyntaxError { line, reason }
    }

    fn expect_end(&self) -> Result<(), SyntaxError> {
        match self.tokens.get(self.position) {
            None => Ok(()),
            Some(token) => Err(SyntaxError {
                line: token.line,
                reason: format!(
                    "unexpected {} after the last tier: check the tier and interval counts",
                    token.value.describe()
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_and_point_debug_leave_text_out() {
        let interval = Interval {
            xmin: 0.5,
            xmax: 1.5,
            text: "it hurts here".into(),
            line: 12,
        };
        assert_eq!(
            format!("{interval:?}"),
            "Interval { xmin: 0.5, xmax: 1.5, text: [redacted], line: 12 }"
        );
        let point = Point {
            time: 2.0,
            mark: "cough".into(),
        };
        assert_eq!(
            format!("{point:?}"),
            "Point { time: 2.0, mark: [redacted] }"
        );
    }

    const LONG: &str = "File type = \"ooTextFile\"\r\nObject class = \"TextGrid\"\r\n\r\n\
        xmin = 0 \r\nxmax = 10.5 \r\ntiers? <exists> \r\nsize = 1 \r\nitem []: \r\n\
        \titem [1]:\r\n\t\tclass = \"IntervalTier\" \r\n\t\tname = \"Speaker\" \r\n\
        \t\txmin = 0 \r\n\t\txmax = 10.5 \r\n\t\tintervals: size = 3 \r\n\
        \t\tintervals [1]:\r\n\t\t\txmin = 0 \r\n\t\t\txmax = 2.5334561157322537 \r\n\
        \t\t\ttext = \"\" \r\n\
        \t\tintervals [2]:\r\n\t\t\txmin = 2.5334561157322537 \r\n\t\t\txmax = 5 \r\n\
        \t\t\ttext = \"She said \"\"hello\"\" <UNIN/> twice.\" \r\n\
        \t\tintervals [3]:\r\n\t\t\txmin = 5 \r\n\t\t\txmax = 10.5 \r\n\
        \t\t\ttext = \"   \" \r\n";

    fn intervals(grid: &TextGrid) -> &[Interval] {
        match &grid.tiers[0].content {
            TierContent::Intervals(intervals) => intervals,
            TierContent::Points(_) => panic!("expected an interval tier"),
        }
    }

    #[test]
    fn long_format_with_crlf_and_tabs() {
        let grid = parse(LONG).unwrap();
        assert_eq!(grid.xmax, 10.5);
        assert_eq!(grid.tiers.len(), 1);
        assert_eq!(grid.tiers[0].name, "Speaker");
        let intervals = intervals(&grid);
        assert_eq!(intervals.len(), 3);
        assert_eq!(intervals[1].xmin, 2.5334561157322537);
        assert_eq!(intervals[1].line, 22);
    }

    #[test]
    fn doubled_quotes_unescape_and_tags_stay() {
        let grid = parse(LONG).unwrap();
        assert_eq!(
            intervals(&grid)[1].text,
            "She said \"hello\" <UNIN/> twice."
        );
    }

    #[test]
    fn spaces_and_lf_parse_the_same() {
        let spaced = LONG.replace("\r\n", "\n").replace('\t', "    ");
        assert_eq!(parse(&spaced).unwrap(), parse(LONG).unwrap());
    }

    #[test]
    fn short_format_parses() {
        let short =
            "File type = \"ooTextFile\"\nObject class = \"TextGrid\"\n\n0\n4\n<exists>\n1\n\
            \"IntervalTier\"\n\"words\"\n0\n4\n2\n0\n1.5\n\"hi\"\n1.5\n4\n\"\"\n";
        let grid = parse(short).unwrap();
        assert_eq!(intervals(&grid)[0].text, "hi");
        assert_eq!(intervals(&grid)[1].xmax, 4.0);
    }

    #[test]
    fn string_may_span_lines() {
        let text = LONG.replace("twice.\"", "twice\r\nagain.\"");
        let grid = parse(&text).unwrap();
        assert_eq!(
            intervals(&grid)[1].text,
            "She said \"hello\" <UNIN/> twice\nagain."
        );
    }

    #[test]
    fn point_tier_parses() {
        let text = "File type = \"ooTextFile\"\nObject class = \"TextGrid\"\nxmin = 0\nxmax = 2\n\
            tiers? <exists>\nsize = 1\nitem []:\n  item [1]:\n    class = \"TextTier\"\n\
            name = \"events\"\n xmin = 0\n xmax = 2\n points: size = 1\n points [1]:\n\
            number = 1.25\n mark = \"cough\"\n";
        let grid = parse(text).unwrap();
        assert_eq!(
            grid.tiers[0].content,
            TierContent::Points(vec![Point {
                time: 1.25,
                mark: "cough".into()
            }])
        );
    }

    #[test]
    fn truncated_file_names_the_last_line() {
        let cut = &LONG[..LONG.find("intervals [3]").unwrap()];
        let err = parse(cut).unwrap_err();
        assert!(err.reason.contains("truncated"), "{}", err.reason);
        assert_eq!(err.line, cut.lines().count());
    }

    #[test]
    fn unclosed_string_names_its_line() {
        let cut = &LONG[..LONG.rfind("\" \r\n").unwrap()];
        let err = parse(cut).unwrap_err();
        assert_eq!(err.line, 26);
        assert!(err.reason.contains("not closed"), "{}", err.reason);
    }

    #[test]
    fn number_where_text_expected() {
        let text = LONG.replace("text = \"\" ", "text = 3 ");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 18);
        assert!(err.reason.contains("after \"text\""), "{}", err.reason);
    }

    #[test]
    fn reversed_interval_is_rejected() {
        let text = LONG.replace("xmax = 5 ", "xmax = 1 ");
        let err = parse(&text).unwrap_err();
        assert!(err.reason.contains("before it starts"), "{}", err.reason);
    }

    #[test]
    fn extra_values_are_rejected() {
        let text = format!("{LONG}        intervals [4]:\r\n xmin = 10.5\r\n");
        let err = parse(&text).unwrap_err();
        assert!(err.reason.contains("after the last tier"), "{}", err.reason);
    }

    #[test]
    fn not_a_textgrid() {
        let err = parse("{\"speaker\": \"doctor\"}").unwrap_err();
        assert_eq!(err.line, 1);
    }

    #[test]
    fn utf16_and_bom_decode() {
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in LONG.encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(decode_text(&utf16).unwrap(), LONG);
        let mut utf8 = vec![0xEF, 0xBB, 0xBF];
        utf8.extend_from_slice(LONG.as_bytes());
        assert_eq!(decode_text(&utf8).unwrap(), LONG);
    }

    #[test]
    fn speaker_comes_from_file_name_suffix() {
        let path = Path::new("/data/day1_consultation01_Doctor.TextGrid");
        assert_eq!(speaker_from_file_name(path).as_deref(), Some("doctor"));
        assert_eq!(
            speaker_from_file_name(Path::new("nospeaker.TextGrid")),
            None
        );
        assert_eq!(
            speaker_from_file_name(Path::new("trailing_.TextGrid")),
            None
        );
    }

    #[test]
    fn speaker_file_skips_empty_intervals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("visit_patient.TextGrid");
        std::fs::write(&path, LONG).unwrap();
        let segments = read_speaker_file(&path).unwrap();
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].speaker, "patient");
        assert_eq!(segments[0].start_ms, 2533);
        assert_eq!(segments[0].end_ms, 5000);
        assert!(segments[0].is_final);
    }

    #[test]
    fn speaker_file_errors_name_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("visit_doctor.TextGrid");
        std::fs::write(&path, LONG.replace("xmax = 5 ", "xmax = 5x ")).unwrap();
        let message = read_speaker_file(&path).unwrap_err().to_string();
        assert!(message.contains("visit_doctor.TextGrid:21:"), "{message}");
    }
}
