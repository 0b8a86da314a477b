//! Reporting config problems: every unreadable key, not only the first
//! serde stops at, and every checked problem, as
//! `FILE:LINE:COL: key.path: message`.

use super::locate;

/// `FILE:LINE:COL: key.path: message` for each (key path, message) found by
/// the checks, located in `src` (a missing key at its table), in the order
/// given.
pub(super) fn render(file: &str, src: &str, problems: Vec<(Vec<String>, String)>) -> Vec<String> {
    problems
        .into_iter()
        .map(|(path, msg)| {
            let segs: Vec<&str> = path.iter().map(String::as_str).collect();
            let (line, col) = locate::locate(src, &segs)
                .map(|span| locate::line_col(src, span.start))
                .unwrap_or((1, 1));
            format!("{file}:{line}:{col}: {}: {msg}", locate::key_path(&path))
        })
        .collect()
}

/// Every key that cannot be read, not only the first. serde stops at the
/// first, so the line it names is commented out (or, when that line was a
/// required key, its whole table) and the text read again, until it reads
/// or the error is not one a line can be blamed for (it spans lines, or is a
/// syntax error). Once the rest reads, its checks run too, so one run
/// reports every problem. Lines keep their numbers; problems come in file
/// order.
pub(super) fn type_errors(file: &str, src: &str, first: toml::de::Error) -> Vec<String> {
    const MAX_PROBLEMS: usize = 50;
    let mut problems = vec![locate::describe_toml_error(file, src, &first)];
    if toml::from_str::<toml::Table>(src).is_err() {
        // A syntax error: what follows it cannot be read.
        return problems;
    }
    let mut text = src.to_string();
    let mut error = first;
    while problems.len() < MAX_PROBLEMS {
        let Some(line) = blamed_line(&text, &error) else {
            break;
        };
        let attempts = [Some(line.clone()), table_around(&text, line.start)];
        let next = attempts.into_iter().flatten().find_map(|lines| {
            let candidate = comment_out(&text, lines);
            match toml::from_str::<super::Config>(&candidate) {
                // Our own doing: the commented-out key was required.
                Err(e) if e.message().starts_with("missing field") => None,
                read => Some((candidate, read)),
            }
        });
        let next = match next {
            Some((candidate, Err(next))) => (candidate, next),
            Some((candidate, Ok(cfg))) => {
                // The rest reads: its range problems belong in the same
                // report, except those about a table whose bad key was
                // commented out (it may look missing now).
                let unread: Vec<String> = problems.iter().filter_map(|p| key_of(file, p)).collect();
                let checked = super::check::validate(&cfg).into_iter().filter(|(path, _)| {
                    let key = locate::key_path(path);
                    !unread.iter().any(|u| u.starts_with(&key))
                });
                problems.extend(render(file, &candidate, checked.collect()));
                break;
            }
            None => break,
        };
        let (candidate, next) = next;
        if toml::from_str::<toml::Table>(&candidate).is_err() {
            break;
        }
        problems.push(locate::describe_toml_error(file, &candidate, &next));
        (text, error) = (candidate, next);
    }
    problems.sort_by_key(|p| {
        let mut at = p[file.len()..]
            .split(':')
            .skip(1)
            .map(|n| n.parse::<usize>().unwrap_or(0));
        (at.next(), at.next())
    });
    problems
}

/// The key path of a rendered problem, `FILE:LINE:COL: key.path: message`.
fn key_of(file: &str, problem: &str) -> Option<String> {
    let rest = problem.get(file.len()..)?;
    let key = rest.splitn(4, ':').nth(3)?.trim_start().split(": ").next()?;
    Some(key.to_owned())
}

/// The byte range of the one line an error points into, unless the error
/// spans lines or points at a table header.
fn blamed_line(text: &str, error: &toml::de::Error) -> Option<std::ops::Range<usize>> {
    let span = error.span()?;
    let start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let header = text[start..end].trim_start().starts_with('[');
    (span.end <= end && !header).then_some(start..end)
}

/// The table (header line up to the next header) holding byte `at`.
fn table_around(text: &str, at: usize) -> Option<std::ops::Range<usize>> {
    let is_header = |l: &str| l.trim_start().starts_with('[');
    let mut offset = 0;
    let mut table = None;
    for line in text.split_inclusive('\n') {
        if is_header(line) {
            if offset > at {
                return table.map(|start| start..offset);
            }
            table = Some(offset);
        }
        offset += line.len();
    }
    table.map(|start| start..text.len())
}

/// `text` with every line starting in `lines` turned into a comment.
fn comment_out(text: &str, lines: std::ops::Range<usize>) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if lines.contains(&offset) {
            out.push('#');
        }
        out.push_str(line);
        offset += line.len();
    }
    out
}
