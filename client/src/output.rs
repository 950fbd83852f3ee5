//! Rendering of command output: tables that fit the terminal, CSV, JSON and YAML, and
//! human-readable sizes.

use comfy_table::{ContentArrangement, ContentLineStyle, LineStyle, Table, TableStyle};
use serde_json::Value;

/// Output formats of the listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A table framed like `lxc list`
    #[default]
    Table,
    /// The API objects as JSON
    Json,
    /// The API objects as YAML
    Yaml,
    /// The table's columns as comma-separated values, with a header line
    Csv,
}

/// Rendering failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot render JSON")]
    Json(#[source] serde_json::Error),
    #[error("cannot render YAML")]
    Yaml(#[source] serde_yaml_ng::Error),
}

/// lxc's framing: `+---+` lines around the header and between every row.
const LXC_STYLE: TableStyle = TableStyle::new()
    .top_border(LineStyle::new('+', '-', '+', '+'))
    .header_lines(ContentLineStyle::new('|', '|', '|'))
    .header_separator(LineStyle::new('+', '-', '+', '+'))
    .content_lines(ContentLineStyle::new('|', '|', '|'))
    .row_separator(LineStyle::new('+', '-', '+', '+'))
    .bottom_border(LineStyle::new('+', '-', '+', '+'));

/// A table of `rows` under `header`, wrapped to the terminal width when stdout is one.
/// `width` forces a width (tests); the result ends with a newline.
pub fn render_table(header: &[&str], rows: &[Vec<String>], width: Option<u16>) -> String {
    let mut table = Table::new();
    table
        .load_style(LXC_STYLE)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    if let Some(width) = width {
        table.set_width(width);
    }
    for row in rows {
        table.add_row(row.clone());
    }
    format!("{table}\n")
}

/// `rows` as CSV with a header line (RFC 4180 quoting where needed).
pub fn render_csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |out: &mut String, fields: &mut dyn Iterator<Item = &str>| {
        let quoted: Vec<String> = fields.map(csv_field).collect();
        out.push_str(&quoted.join(","));
        out.push('\n');
    };
    line(&mut out, &mut header.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// `value` as JSON (one line, like `lxc --format json`) or YAML; the result ends with a newline.
pub fn render_structured(value: &Value, format: Format) -> Result<String, Error> {
    match format {
        Format::Yaml => serde_yaml_ng::to_string(value).map_err(Error::Yaml),
        _ => serde_json::to_string(value)
            .map(|s| s + "\n")
            .map_err(Error::Json),
    }
}

/// Render a listing in `format`: the rows for table and CSV, the raw API value for JSON and YAML.
pub fn render(
    format: Format,
    header: &[&str],
    rows: &[Vec<String>],
    raw: &Value,
) -> Result<String, Error> {
    match format {
        Format::Table => Ok(render_table(header, rows, None)),
        Format::Csv => Ok(render_csv(header, rows)),
        Format::Json | Format::Yaml => render_structured(raw, format),
    }
}

/// A byte count in IEC units with two decimals (`512B`, `1.23MiB`), as lxc prints them.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.2}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn human_sizes() {
        let cases = [
            (0, "0B"),
            (512, "512B"),
            (1023, "1023B"),
            (1024, "1.00KiB"),
            (1536, "1.50KiB"),
            (1_289_748, "1.23MiB"),
            (5 * 1024 * 1024 * 1024, "5.00GiB"),
            (u64::MAX, "16.00EiB"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(human_size(bytes), expected, "{bytes}");
        }
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        let rows = vec![
            vec!["c1".into(), "a,b".into()],
            vec!["c2".into(), "say \"hi\"\nthere".into()],
        ];
        assert_eq!(
            render_csv(&["NAME", "NOTE"], &rows),
            "NAME,NOTE\nc1,\"a,b\"\nc2,\"say \"\"hi\"\"\nthere\"\n"
        );
    }

    #[test]
    fn table_is_framed_like_lxc() {
        let rows = vec![vec!["c1".into(), "RUNNING".into()]];
        let table = render_table(&["NAME", "STATE"], &rows, Some(80));
        assert_eq!(
            table,
            "+------+---------+\n\
             | NAME | STATE   |\n\
             +------+---------+\n\
             | c1   | RUNNING |\n\
             +------+---------+\n"
        );
    }

    #[test]
    fn structured_output() {
        let value = json!([{"name": "c1"}]);
        assert_eq!(
            render_structured(&value, Format::Json).ok().as_deref(),
            Some("[{\"name\":\"c1\"}]\n")
        );
        assert_eq!(
            render_structured(&value, Format::Yaml).ok().as_deref(),
            Some("- name: c1\n")
        );
    }
}
