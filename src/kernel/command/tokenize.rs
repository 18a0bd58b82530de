//! Splits a `sh -c` script into commands when it is made only of plain words joined by
//! `&&`, `||`, `;` and `|`; anything the shell would expand, redirect or branch on makes the
//! script dynamic (`None`). Works on characters, never on byte offsets, so no input can
//! split a multi-byte character.

/// A lexical token of a plain script.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    /// `&&`, `||`, `;` or `|`.
    Separator,
}

/// Splits a plain script into its commands (leading `NAME=value` assignments kept); `None`
/// if it uses anything else.
pub(super) fn split_script(script: &str) -> Option<Vec<Vec<String>>> {
    let tokens = tokenize(script)?;
    if tokens.is_empty() {
        return Some(Vec::new());
    }
    let mut commands = vec![Vec::new()];
    for token in tokens {
        match token {
            Token::Word(word) => commands.last_mut()?.push(word),
            Token::Separator => commands.push(Vec::new()),
        }
    }
    let well_formed = commands.iter().all(|command| !command.is_empty());
    let plain = commands.iter().all(|command| !starts_with_keyword(command));
    (well_formed && plain).then_some(commands)
}

/// Reserved words make control flow (`if x; then curl; fi`): not a plain list of commands.
fn starts_with_keyword(command: &[String]) -> bool {
    const KEYWORDS: &[&str] = &[
        "if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while", "until",
        "do", "done", "function", "coproc", "in", "!", "[[", "]]", "{", "}",
    ];
    let first = command
        .iter()
        .find(|word| !super::environment::is_assignment(word));
    first.is_some_and(|word| KEYWORDS.contains(&word.as_str()))
}

fn is_plain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)
}

fn tokenize(script: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = script.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => flush(&mut word, &mut tokens),
            ';' => {
                flush(&mut word, &mut tokens);
                tokens.push(Token::Separator);
            }
            '&' | '|' => {
                flush(&mut word, &mut tokens);
                match chars.peek() {
                    Some(&next) if next == c => {
                        chars.next();
                    }
                    // A lone `&` backgrounds a job; `|&` pipes stderr too.
                    _ if c == '&' => return None,
                    Some('&') => return None,
                    _ => {}
                }
                tokens.push(Token::Separator);
            }
            '\'' => word
                .get_or_insert_with(String::new)
                .push_str(&single_quoted(&mut chars)?),
            '"' => word
                .get_or_insert_with(String::new)
                .push_str(&double_quoted(&mut chars)?),
            c if is_plain_char(c) => word.get_or_insert_with(String::new).push(c),
            _ => return None,
        }
    }
    flush(&mut word, &mut tokens);
    Some(tokens)
}

fn flush(word: &mut Option<String>, tokens: &mut Vec<Token>) {
    if let Some(word) = word.take() {
        tokens.push(Token::Word(word));
    }
}

/// The rest of a `'…'` string (everything is literal inside), without newlines.
fn single_quoted(chars: &mut impl Iterator<Item = char>) -> Option<String> {
    let mut text = String::new();
    for c in chars {
        match c {
            '\'' => return Some(text),
            '\n' | '\r' => return None,
            c => text.push(c),
        }
    }
    None
}

/// The rest of a `"…"` string, refusing anything the shell would expand in it.
fn double_quoted(chars: &mut impl Iterator<Item = char>) -> Option<String> {
    let mut text = String::new();
    for c in chars {
        match c {
            '"' => return Some(text),
            '$' | '`' | '\\' | '!' | '\n' | '\r' => return None,
            c => text.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::split_script;

    #[test]
    fn plain_lists_split_and_dynamic_ones_do_not() {
        assert_eq!(
            split_script("a 'b c' && d|e").unwrap(),
            vec![vec!["a", "b c"], vec!["d"], vec!["e"]]
        );
        for dynamic in [
            "a &",
            "a |& b",
            "a $(b)",
            "é",
            "{ a; }",
            "[[ -f x ]]",
            "a;",
            "'x",
        ] {
            assert_eq!(split_script(dynamic), None, "{dynamic:?}");
        }
    }
}
