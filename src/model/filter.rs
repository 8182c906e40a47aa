//! The SCIM filter parser: RFC 7644 section 3.4.2.2 text into the one filter
//! AST, `projections::directory::filter::Filter`.
//!
//! Grammar, with `not` binding tighter than `and`, and `and` tighter than
//! `or`; both group to the left:
//!
//! ```text
//! filter     = or
//! or         = and *("or" and)
//! and        = unary *("and" unary)
//! unary      = "not" "(" filter ")" / "(" filter ")" / attrExp / valuePath
//! valuePath  = attrPath "[" valFilter "]" ["." subAttr compareOp compValue]
//! attrExp    = attrPath "pr" / attrPath compareOp compValue
//! attrPath   = [URN ":"] name ["." subAttr]
//! ```
//!
//! Keywords, operators and `true`/`false`/`null` are case-insensitive.
//! `emails[type eq "work"].value eq "x"` (Entra ID's form, outside the RFC
//! grammar) is read as `emails[type eq "work" and value eq "x"]`, which means
//! the same. A value filter cannot hold another value path. Every limit is a
//! named constant, and an input past one is an error, never a panic or a
//! deep recursion.

use projections::directory::filter::{AttrPath, CompareOp, CompareValue, Filter};

/// Longest filter text accepted, in bytes.
pub const FILTER_LENGTH_MAX: usize = 8 * 1024;
/// Deepest nesting of parentheses, `not` and value paths.
pub const FILTER_DEPTH_MAX: usize = 32;
/// Most comparisons and presence tests in one filter.
pub const FILTER_TERMS_MAX: usize = 256;

/// Why a filter does not parse: what was wrong and where (a byte offset),
/// for the `detail` of a 400 `invalidFilter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub offset: usize,
    pub message: String,
}

impl std::fmt::Display for FilterError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "invalid filter at character {}: {}", self.offset + 1, self.message)
    }
}

/// Parses a whole filter. The limits hold for the filter as rollcall
/// reads it too, its canonical text (what `Display` prints): that text can
/// be longer or deeper than the one sent (Entra's `attr[...].sub op v`
/// gains a pair of parentheses; `1E15` is written out in full), and a
/// filter whose canonical text would not parse back is refused, so
/// `parse(print(ast)) == ast` holds for every filter accepted (found by
/// fuzzing: fuzz/regressions/filter).
pub fn parse_filter(text: &str) -> Result<Filter, FilterError> {
    let filter = parse_within_limits(text)?;
    let canonical = filter.to_string();
    if canonical != text
        && let Err(error) = parse_within_limits(&canonical)
    {
        return Err(FilterError {
            offset: text.len(),
            message: format!(
                "{}, in the form rollcall reads it (Entra's attr[...].sub adds a level of \
                 parentheses, and numbers are written out in full)",
                error.message
            ),
        });
    }
    Ok(filter)
}

fn parse_within_limits(text: &str) -> Result<Filter, FilterError> {
    if text.len() > FILTER_LENGTH_MAX {
        return Err(FilterError {
            offset: FILTER_LENGTH_MAX,
            message: format!("a filter is at most {FILTER_LENGTH_MAX} bytes"),
        });
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, next: 0, depth: 0, terms: 0, end: text.len() };
    let filter = parser.or(false)?;
    match parser.peek() {
        None => Ok(filter),
        Some(token) => {
            Err(parser.error_at(token.offset, format!("unexpected {}", token.kind.describe())))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    OpenParen,
    CloseParen,
    OpenBracket,
    CloseBracket,
    /// A run of name characters: a keyword, an operator or an attribute
    /// path (which may start with `.` right after `]`).
    Word(String),
    String(String),
    Number(serde_json::Number),
}

impl TokenKind {
    fn describe(&self) -> String {
        match self {
            TokenKind::OpenParen => "'('".to_owned(),
            TokenKind::CloseParen => "')'".to_owned(),
            TokenKind::OpenBracket => "'['".to_owned(),
            TokenKind::CloseBracket => "']'".to_owned(),
            TokenKind::Word(word) => format!("'{word}'"),
            TokenKind::String(_) => "a string".to_owned(),
            TokenKind::Number(number) => format!("the number {number}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    offset: usize,
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b':' | b'.' | b'_' | b'-' | b'$')
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let start = at;
        let kind = match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {
                at += 1;
                continue;
            }
            b'(' => TokenKind::OpenParen,
            b')' => TokenKind::CloseParen,
            b'[' => TokenKind::OpenBracket,
            b']' => TokenKind::CloseBracket,
            b'"' => {
                let end = string_end(bytes, start).ok_or_else(|| FilterError {
                    offset: start,
                    message: "a string is not closed".to_owned(),
                })?;
                let literal = text.get(start..end).unwrap_or_default();
                let value: String = serde_json::from_str(literal).map_err(|error| FilterError {
                    offset: start,
                    message: format!("bad string: {error}"),
                })?;
                tokens.push(Token { kind: TokenKind::String(value), offset: start });
                at = end;
                continue;
            }
            b'-' | b'0'..=b'9' => {
                // A number, or a bare word that starts like one (an unquoted
                // GUID): take the whole run, then decide.
                let mut end = start + 1;
                while bytes.get(end).is_some_and(|&b| is_word_byte(b) || b == b'+') {
                    end += 1;
                }
                let literal = text.get(start..end).unwrap_or_default();
                let kind = match literal.parse::<serde_json::Number>() {
                    Ok(number) => TokenKind::Number(number),
                    Err(_)
                        if literal.bytes().all(is_word_byte)
                            && literal.bytes().any(|b| b.is_ascii_alphabetic()) =>
                    {
                        TokenKind::Word(literal.to_owned())
                    }
                    Err(_) => {
                        return Err(FilterError {
                            offset: start,
                            message: format!("'{literal}' is not a number"),
                        });
                    }
                };
                tokens.push(Token { kind, offset: start });
                at = end;
                continue;
            }
            byte if is_word_byte(byte) => {
                let mut end = start + 1;
                while bytes.get(end).copied().is_some_and(is_word_byte) {
                    end += 1;
                }
                tokens.push(Token {
                    kind: TokenKind::Word(text.get(start..end).unwrap_or_default().to_owned()),
                    offset: start,
                });
                at = end;
                continue;
            }
            _ => {
                let character =
                    text.get(start..).and_then(|rest| rest.chars().next()).unwrap_or('?');
                return Err(FilterError {
                    offset: start,
                    message: format!("unexpected character '{character}'"),
                });
            }
        };
        tokens.push(Token { kind, offset: start });
        at += 1;
    }
    Ok(tokens)
}

/// The byte just past the closing quote of the string opening at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        match bytes.get(at)? {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
    terms: usize,
    /// The text's length: where "end of filter" errors point.
    end: usize,
}

fn keyword(token: Option<&Token>, word: &str) -> bool {
    matches!(token, Some(Token { kind: TokenKind::Word(text), .. }) if text.eq_ignore_ascii_case(word))
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn peek_second(&self) -> Option<&Token> {
        self.tokens.get(self.next + 1)
    }

    fn advance(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    fn error_at(&self, offset: usize, message: String) -> FilterError {
        FilterError { offset, message }
    }

    fn error_here(&self, expected: &str) -> FilterError {
        match self.peek() {
            Some(token) => self.error_at(
                token.offset,
                format!("expected {expected}, found {}", token.kind.describe()),
            ),
            None => {
                self.error_at(self.end, format!("expected {expected}, found the end of the filter"))
            }
        }
    }

    fn expect(&mut self, kind: &TokenKind, expected: &str) -> Result<(), FilterError> {
        if self.peek().map(|token| &token.kind) == Some(kind) {
            self.next += 1;
            Ok(())
        } else {
            Err(self.error_here(expected))
        }
    }

    fn descend(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > FILTER_DEPTH_MAX {
            let offset = self.peek().map_or(self.end, |token| token.offset);
            return Err(self.error_at(
                offset,
                format!("a filter nests at most {FILTER_DEPTH_MAX} levels deep"),
            ));
        }
        Ok(())
    }

    /// `in_value_filter`: inside `attr[...]`, where value paths may not nest.
    fn or(&mut self, in_value_filter: bool) -> Result<Filter, FilterError> {
        let mut left = self.and(in_value_filter)?;
        while keyword(self.peek(), "or") {
            self.next += 1;
            let right = self.and(in_value_filter)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, in_value_filter: bool) -> Result<Filter, FilterError> {
        let mut left = self.unary(in_value_filter)?;
        while keyword(self.peek(), "and") {
            self.next += 1;
            let right = self.unary(in_value_filter)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, in_value_filter: bool) -> Result<Filter, FilterError> {
        let not = keyword(self.peek(), "not")
            && matches!(self.peek_second(), Some(Token { kind: TokenKind::OpenParen, .. }));
        if not {
            self.next += 1;
        }
        if matches!(self.peek(), Some(Token { kind: TokenKind::OpenParen, .. })) {
            self.next += 1;
            self.descend()?;
            let inner = self.or(in_value_filter)?;
            self.expect(&TokenKind::CloseParen, "')'")?;
            self.depth -= 1;
            return Ok(if not { Filter::Not(Box::new(inner)) } else { inner });
        }
        self.attribute_expression(in_value_filter)
    }

    fn attribute_expression(&mut self, in_value_filter: bool) -> Result<Filter, FilterError> {
        let Some(Token { kind: TokenKind::Word(word), offset }) = self.peek().cloned() else {
            return Err(self.error_here("an attribute name"));
        };
        self.next += 1;
        let path = attribute_path(&word).map_err(|message| self.error_at(offset, message))?;
        if matches!(self.peek(), Some(Token { kind: TokenKind::OpenBracket, .. })) {
            if in_value_filter {
                return Err(self.error_at(
                    offset,
                    "a value filter cannot contain another value path".to_owned(),
                ));
            }
            if path.sub_attribute.is_some() {
                return Err(self.error_at(
                    offset,
                    "a value path names a multi-valued attribute, not a sub-attribute".to_owned(),
                ));
            }
            self.next += 1;
            self.descend()?;
            let mut inner = self.or(true)?;
            self.expect(&TokenKind::CloseBracket, "']'")?;
            self.depth -= 1;
            // Entra ID's `emails[type eq "work"].value eq "x"`.
            if let Some(Token { kind: TokenKind::Word(word), offset }) = self.peek().cloned()
                && let Some(sub_attribute) = word.strip_prefix('.')
            {
                self.next += 1;
                let sub_path = attribute_path(sub_attribute)
                    .map_err(|message| self.error_at(offset, message))?;
                if sub_path.schema.is_some() || sub_path.sub_attribute.is_some() {
                    return Err(
                        self.error_at(offset, format!("'{word}' is not a sub-attribute name"))
                    );
                }
                let comparison = self.comparison(sub_path)?;
                inner = Filter::And(Box::new(inner), Box::new(comparison));
            }
            return Ok(Filter::ValuePath { path, filter: Box::new(inner) });
        }
        self.comparison(path)
    }

    fn comparison(&mut self, path: AttrPath) -> Result<Filter, FilterError> {
        self.terms += 1;
        if self.terms > FILTER_TERMS_MAX {
            let offset = self.peek().map_or(self.end, |token| token.offset);
            return Err(self
                .error_at(offset, format!("a filter has at most {FILTER_TERMS_MAX} comparisons")));
        }
        let operator = match self.peek() {
            Some(Token { kind: TokenKind::Word(word), .. }) => word.clone(),
            _ => {
                return Err(self.error_here("an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)"));
            }
        };
        if operator.eq_ignore_ascii_case("pr") {
            self.next += 1;
            return Ok(Filter::Present { path });
        }
        let Some(op) = CompareOp::from_keyword(&operator) else {
            return Err(self.error_here("an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)"));
        };
        self.next += 1;
        let value = match self.advance() {
            Some(Token { kind: TokenKind::String(text), .. }) => CompareValue::String(text),
            Some(Token { kind: TokenKind::Number(number), .. }) => CompareValue::Number(number),
            Some(Token { kind: TokenKind::Word(word), .. })
                if word.eq_ignore_ascii_case("true") =>
            {
                CompareValue::Bool(true)
            }
            Some(Token { kind: TokenKind::Word(word), .. })
                if word.eq_ignore_ascii_case("false") =>
            {
                CompareValue::Bool(false)
            }
            Some(Token { kind: TokenKind::Word(word), .. })
                if word.eq_ignore_ascii_case("null") =>
            {
                CompareValue::Null
            }
            // Entra ID sends matching values unquoted (`externalId eq jyoung`,
            // `userName eq 5f3a-...`): a bare word is a string.
            Some(Token { kind: TokenKind::Word(word), .. }) => CompareValue::String(word),
            _ => {
                self.next -= 1;
                return Err(
                    self.error_here("a value (a \"string\", a number, true, false or null)")
                );
            }
        };
        Ok(Filter::Compare { path, op, value })
    }
}

/// Splits `[URN ":"] name ["." sub]` into an [`AttrPath`].
pub fn attribute_path(word: &str) -> Result<AttrPath, String> {
    let (schema, rest) = match word.rfind(':') {
        Some(colon) if word.get(..4).is_some_and(|prefix| prefix.eq_ignore_ascii_case("urn:")) => (
            Some(word.get(..colon).unwrap_or_default().to_owned()),
            word.get(colon + 1..).unwrap_or_default(),
        ),
        Some(_) => return Err(format!("'{word}' is not an attribute path")),
        None => (None, word),
    };
    let (name, sub_attribute) = match rest.split_once('.') {
        Some((name, sub)) => (name, Some(sub)),
        None => (rest, None),
    };
    let valid_name = |name: &str| {
        let mut bytes = name.bytes();
        bytes.next().is_some_and(|first| first.is_ascii_alphabetic() || first == b'$')
            && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
    };
    if !valid_name(name) || sub_attribute.is_some_and(|sub| !valid_name(sub)) {
        return Err(format!("'{word}' is not an attribute path"));
    }
    Ok(AttrPath { schema, name: name.to_owned(), sub_attribute: sub_attribute.map(str::to_owned) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> AttrPath {
        AttrPath::named(name)
    }

    fn eq(name: &str, value: &str) -> Filter {
        Filter::Compare {
            path: path(name),
            op: CompareOp::Equal,
            value: CompareValue::String(value.to_owned()),
        }
    }

    fn and(left: Filter, right: Filter) -> Filter {
        Filter::And(Box::new(left), Box::new(right))
    }

    fn or(left: Filter, right: Filter) -> Filter {
        Filter::Or(Box::new(left), Box::new(right))
    }

    /// The single check of this parser: input text, expected tree.
    fn check(text: &str, expected: Filter) {
        assert_eq!(parse_filter(text), Ok(expected), "{text}");
    }

    fn check_error(text: &str, needle: &str) {
        match parse_filter(text) {
            Ok(filter) => panic!("{text:?} parsed as {filter:?}"),
            Err(error) => assert!(error.to_string().contains(needle), "{text:?}: {error}"),
        }
    }

    #[test]
    fn every_operator_in_any_case() {
        for op in CompareOp::ALL {
            for keyword in [op.keyword().to_owned(), op.keyword().to_uppercase()] {
                check(
                    &format!("userName {keyword} \"bjensen\""),
                    Filter::Compare {
                        path: path("userName"),
                        op,
                        value: CompareValue::String("bjensen".to_owned()),
                    },
                );
            }
        }
        check("title pr", Filter::Present { path: path("title") });
        check("title PR", Filter::Present { path: path("title") });
    }

    #[test]
    fn every_kind_of_value() {
        let compare = |value| Filter::Compare { path: path("x"), op: CompareOp::Equal, value };
        check("x eq true", compare(CompareValue::Bool(true)));
        check("x eq False", compare(CompareValue::Bool(false)));
        check("x eq NULL", compare(CompareValue::Null));
        check("x eq 42", compare(CompareValue::Number(42.into())));
        check(
            "x eq -1.5e3",
            compare(CompareValue::Number(serde_json::Number::from_f64(-1500.0).unwrap())),
        );
        check(
            r#"x eq "a \"quoted\" \u00e9""#,
            compare(CompareValue::String("a \"quoted\" é".to_owned())),
        );
        check(
            r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
            Filter::Compare {
                path: AttrPath {
                    schema: None,
                    name: "meta".to_owned(),
                    sub_attribute: Some("lastModified".to_owned()),
                },
                op: CompareOp::GreaterThan,
                value: CompareValue::String("2011-05-13T04:42:34Z".to_owned()),
            },
        );
    }

    #[test]
    fn not_binds_tighter_than_and_which_binds_tighter_than_or() {
        check(
            r#"a eq "1" or b eq "2" and c eq "3""#,
            or(eq("a", "1"), and(eq("b", "2"), eq("c", "3"))),
        );
        check(
            r#"a eq "1" and b eq "2" or c eq "3""#,
            or(and(eq("a", "1"), eq("b", "2")), eq("c", "3")),
        );
        check(
            r#"(a eq "1" or b eq "2") and c eq "3""#,
            and(or(eq("a", "1"), eq("b", "2")), eq("c", "3")),
        );
        check(
            r#"a eq "1" and b eq "2" and c eq "3""#,
            and(and(eq("a", "1"), eq("b", "2")), eq("c", "3")),
        );
        check(
            r#"not (a eq "1") and b eq "2""#,
            and(Filter::Not(Box::new(eq("a", "1"))), eq("b", "2")),
        );
        check(
            r#"NOT(a eq "1" or b eq "2")"#,
            Filter::Not(Box::new(or(eq("a", "1"), eq("b", "2")))),
        );
        check(r#"((a eq "1"))"#, eq("a", "1"));
    }

    #[test]
    fn value_paths_sub_attributes_and_schema_urns() {
        let work_and_primary = Filter::ValuePath {
            path: path("emails"),
            filter: Box::new(and(
                eq("type", "work"),
                Filter::Compare {
                    path: path("primary"),
                    op: CompareOp::Equal,
                    value: CompareValue::Bool(true),
                },
            )),
        };
        check(r#"emails[type eq "work" and primary eq true]"#, work_and_primary);
        check(
            r#"emails[type eq "work"].value eq "b@example.com""#,
            Filter::ValuePath {
                path: path("emails"),
                filter: Box::new(and(eq("type", "work"), eq("value", "b@example.com"))),
            },
        );
        check(
            r#"emails.value co "@example.com""#,
            Filter::Compare {
                path: AttrPath {
                    schema: None,
                    name: "emails".to_owned(),
                    sub_attribute: Some("value".to_owned()),
                },
                op: CompareOp::Contains,
                value: CompareValue::String("@example.com".to_owned()),
            },
        );
        let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        check(
            &format!(r#"{enterprise}:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d""#),
            Filter::Compare {
                path: AttrPath {
                    schema: Some(enterprise.to_owned()),
                    name: "manager".to_owned(),
                    sub_attribute: Some("value".to_owned()),
                },
                op: CompareOp::Equal,
                value: CompareValue::String("26118915-6090-4610-87e4-49d8ca9f808d".to_owned()),
            },
        );
        check(
            "urn:ietf:params:scim:schemas:extension:2.0:Metadata:costCenter pr",
            Filter::Present {
                path: AttrPath {
                    schema: Some("urn:ietf:params:scim:schemas:extension:2.0:Metadata".to_owned()),
                    name: "costCenter".to_owned(),
                    sub_attribute: None,
                },
            },
        );
        check(
            r#"members[value eq "2819c223"]"#,
            Filter::ValuePath { path: path("members"), filter: Box::new(eq("value", "2819c223")) },
        );
    }

    #[test]
    fn unquoted_values_are_strings_as_entra_sends_them() {
        check("externalId eq jyoung", eq("externalId", "jyoung"));
        check(
            "userName eq 5f3a8b2c-7d1e-4c6b-9a0f-2e4d6c8b1a3f and x eq 7",
            and(
                eq("userName", "5f3a8b2c-7d1e-4c6b-9a0f-2e4d6c8b1a3f"),
                Filter::Compare {
                    path: path("x"),
                    op: CompareOp::Equal,
                    value: CompareValue::Number(7.into()),
                },
            ),
        );
        check(
            "x eq -1e3",
            Filter::Compare {
                path: path("x"),
                op: CompareOp::Equal,
                value: CompareValue::Number(serde_json::Number::from_f64(-1000.0).unwrap()),
            },
        );
    }

    #[test]
    fn attribute_names_that_look_like_keywords_are_still_names() {
        check(r#"not eq "x""#, eq("not", "x"));
        check(r#"and eq "x" and or eq "y""#, and(eq("and", "x"), eq("or", "y")));
    }

    #[test]
    fn malformed_filters_are_errors_that_say_where() {
        check_error("", "expected an attribute name, found the end");
        check_error("userName", "expected an operator");
        check_error("userName eq", "expected a value");
        check_error("userName equals \"x\"", "expected an operator");
        check_error("userName eq \"x", "not closed");
        check_error("userName eq \"x\" and", "expected an attribute name");
        check_error("userName eq \"x\" \"y\"", "unexpected a string");
        check_error("(userName eq \"x\"", "expected ')'");
        check_error("emails[type eq \"work\"", "expected ']'");
        check_error("emails[type[value eq \"x\"]]", "cannot contain another value path");
        check_error("emails.value[type eq \"work\"]", "not a sub-attribute");
        check_error("userName eq 'x'", "unexpected character");
        check_error("userName eq 1.2.3", "not a number");
        check_error("9lives eq \"x\"", "attribute");
        check_error("a:b eq \"x\"", "not an attribute path");
        check_error("not userName eq \"x\"", "expected an operator");
        let error = parse_filter("userName eq").unwrap_err();
        assert_eq!(error.offset, 11);
    }

    #[test]
    fn limits_are_errors_not_stack_overflows() {
        let deep = format!("{}a eq \"x\"{}", "(".repeat(10_000), ")".repeat(10_000));
        check_error(&deep, "at most 8192 bytes");
        let deep = format!("{}a eq \"x\"{}", "(".repeat(40), ")".repeat(40));
        check_error(&deep, "nests at most 32");
        let nots = format!("{}a eq \"x\"{}", "not (".repeat(40), ")".repeat(40));
        check_error(&nots, "nests at most 32");
        let wide = vec!["a eq 1"; FILTER_TERMS_MAX + 1].join(" or ");
        check_error(&wide, "at most 256 comparisons");
        let wide = vec!["a eq 1"; FILTER_TERMS_MAX].join(" or ");
        assert!(parse_filter(&wide).is_ok());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        const SCHEMAS: [&str; 3] = [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            "urn:ietf:params:scim:schemas:extension:2.0:Metadata",
        ];

        fn name() -> impl Strategy<Value = String> {
            "[A-Za-z$][A-Za-z0-9_-]{0,8}"
        }

        fn attr_path() -> impl Strategy<Value = AttrPath> {
            (
                prop::option::of(prop::sample::select(SCHEMAS.to_vec())),
                name(),
                prop::option::of(name()),
            )
                .prop_map(|(schema, name, sub_attribute)| AttrPath {
                    schema: schema.map(str::to_owned),
                    name,
                    sub_attribute,
                })
        }

        fn value() -> impl Strategy<Value = CompareValue> {
            prop_oneof![
                Just(CompareValue::Null),
                any::<bool>().prop_map(CompareValue::Bool),
                any::<i64>().prop_map(|n| CompareValue::Number(n.into())),
                any::<f64>()
                    .prop_filter_map("finite", serde_json::Number::from_f64)
                    .prop_map(CompareValue::Number),
                any::<String>().prop_map(CompareValue::String),
            ]
        }

        fn term() -> impl Strategy<Value = Filter> {
            prop_oneof![
                (attr_path(), prop::sample::select(CompareOp::ALL.to_vec()), value())
                    .prop_map(|(path, op, value)| Filter::Compare { path, op, value }),
                attr_path().prop_map(|path| Filter::Present { path }),
            ]
        }

        /// Filters without value paths: what may stand inside `[...]`.
        fn value_filter() -> impl Strategy<Value = Filter> {
            term().prop_recursive(4, 24, 2, |inner| {
                prop_oneof![
                    (inner.clone(), inner.clone())
                        .prop_map(|(l, r)| Filter::And(Box::new(l), Box::new(r))),
                    (inner.clone(), inner.clone())
                        .prop_map(|(l, r)| Filter::Or(Box::new(l), Box::new(r))),
                    inner.prop_map(|f| Filter::Not(Box::new(f))),
                ]
            })
        }

        fn filter() -> impl Strategy<Value = Filter> {
            let leaf = prop_oneof![
                3 => term(),
                1 => (name(), value_filter()).prop_map(|(name, filter)| Filter::ValuePath {
                    path: AttrPath::named(&name),
                    filter: Box::new(filter),
                }),
            ];
            leaf.prop_recursive(4, 24, 2, |inner| {
                prop_oneof![
                    (inner.clone(), inner.clone())
                        .prop_map(|(l, r)| Filter::And(Box::new(l), Box::new(r))),
                    (inner.clone(), inner.clone())
                        .prop_map(|(l, r)| Filter::Or(Box::new(l), Box::new(r))),
                    inner.prop_map(|f| Filter::Not(Box::new(f))),
                ]
            })
        }

        /// fuzz/regressions/filter: a filter within the limits whose
        /// canonical text is not (one level deeper, or longer) is refused
        /// with why, so every accepted filter prints back to itself; one
        /// level less is accepted and does.
        #[test]
        fn a_filter_whose_canonical_text_breaks_a_limit_is_refused() {
            let deep = |levels: usize| {
                format!("{}a[b pr or c pr].d pr{}", "not (".repeat(levels), ")".repeat(levels))
            };
            let refused = parse_filter(&deep(31)).unwrap_err();
            assert!(refused.message.contains("32 levels"), "{refused}");
            assert!(refused.message.contains("in the form rollcall reads it"), "{refused}");
            let accepted = parse_filter(&deep(30)).unwrap();
            assert_eq!(parse_filter(&accepted.to_string()), Ok(accepted));

            let long = |numbers: usize| {
                format!("{}{} pr", "x eq 1E15 or ".repeat(numbers), "y".repeat(5500))
            };
            assert!(long(200).len() <= FILTER_LENGTH_MAX);
            let refused = parse_filter(&long(200)).unwrap_err();
            assert!(refused.message.contains("8192 bytes"), "{refused}");
            let accepted = parse_filter(&long(50)).unwrap();
            assert_eq!(parse_filter(&accepted.to_string()), Ok(accepted));
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn printing_then_parsing_gives_back_the_same_tree(filter in filter()) {
                let printed = filter.to_string();
                prop_assert_eq!(parse_filter(&printed), Ok(filter), "printed: {}", printed);
            }

            #[test]
            fn no_input_panics(text in any::<String>()) {
                let _ = parse_filter(&text);
            }

            #[test]
            fn no_filter_like_input_panics(text in r#"[a-zA-Z:.\[\]()" 0-9eE+\-\\]{0,64}"#) {
                let _ = parse_filter(&text);
            }
        }
    }
}
