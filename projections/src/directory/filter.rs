//! The SCIM filter AST (RFC 7644 section 3.4.2.2), and its canonical text.
//!
//! One AST serves every use of a filter: list and search queries (translated
//! to SQL by the directory projection), value filters inside PATCH paths
//! (`emails[type eq "work"]`), and the IdP dialects that are normalised into
//! it. The parser lives with the wire format in `src/scim`; this module only
//! defines the tree and prints it back ([`std::fmt::Display`]), printing
//! exactly the parentheses that parsing needs to rebuild the same tree.
//!
//! Names are kept as the client wrote them: matching attribute names
//! case-insensitively, and resolving them against a schema, is the job of
//! whoever evaluates the filter.

use std::fmt;

/// A filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `path op value`, e.g. `userName eq "bjensen"`.
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: CompareValue,
    },
    /// `path pr`: the attribute has a non-empty value.
    Present {
        path: AttrPath,
    },
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `path[filter]`: some value of the multi-valued attribute `path`
    /// matches `filter`, whose paths name sub-attributes of that value.
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

/// An attribute path: `[schema URN ":"] name ["." sub-attribute]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// The schema URN, when the path is qualified by one
    /// (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`).
    pub schema: Option<String>,
    pub name: String,
    pub sub_attribute: Option<String>,
}

impl AttrPath {
    /// An unqualified path to a top-level attribute.
    pub fn named(name: &str) -> AttrPath {
        AttrPath { schema: None, name: name.to_owned(), sub_attribute: None }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Contains,
    StartsWith,
    EndsWith,
    GreaterThan,
    GreaterOrEqual,
    LessThan,
    LessOrEqual,
}

impl CompareOp {
    pub const ALL: [CompareOp; 9] = [
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Contains,
        CompareOp::StartsWith,
        CompareOp::EndsWith,
        CompareOp::GreaterThan,
        CompareOp::GreaterOrEqual,
        CompareOp::LessThan,
        CompareOp::LessOrEqual,
    ];

    /// The operator's keyword, lower case as RFC 7644 writes it.
    pub fn keyword(self) -> &'static str {
        match self {
            CompareOp::Equal => "eq",
            CompareOp::NotEqual => "ne",
            CompareOp::Contains => "co",
            CompareOp::StartsWith => "sw",
            CompareOp::EndsWith => "ew",
            CompareOp::GreaterThan => "gt",
            CompareOp::GreaterOrEqual => "ge",
            CompareOp::LessThan => "lt",
            CompareOp::LessOrEqual => "le",
        }
    }

    /// The operator for a keyword, in any case.
    pub fn from_keyword(word: &str) -> Option<CompareOp> {
        CompareOp::ALL.into_iter().find(|op| op.keyword().eq_ignore_ascii_case(word))
    }
}

/// The literal a comparison compares with (`compValue` in RFC 7644).
#[derive(Debug, Clone, PartialEq)]
pub enum CompareValue {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
}

impl fmt::Display for AttrPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(formatter, "{schema}:")?;
        }
        formatter.write_str(&self.name)?;
        if let Some(sub_attribute) = &self.sub_attribute {
            write!(formatter, ".{sub_attribute}")?;
        }
        Ok(())
    }
}

impl fmt::Display for CompareValue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompareValue::Null => formatter.write_str("null"),
            CompareValue::Bool(value) => write!(formatter, "{value}"),
            CompareValue::Number(number) => write!(formatter, "{number}"),
            // JSON string syntax is SCIM's string syntax.
            CompareValue::String(text) => {
                let quoted = serde_json::Value::String(text.clone());
                write!(formatter, "{quoted}")
            }
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Compare { path, op, value } => {
                write!(formatter, "{path} {} {value}", op.keyword())
            }
            Filter::Present { path } => write!(formatter, "{path} pr"),
            // `and` binds tighter than `or`, and both group to the left, so
            // a right operand of the same operator needs parentheses.
            Filter::And(left, right) => {
                write_operand(formatter, left, matches!(**left, Filter::Or(..)))?;
                formatter.write_str(" and ")?;
                write_operand(formatter, right, matches!(**right, Filter::Or(..) | Filter::And(..)))
            }
            Filter::Or(left, right) => {
                write_operand(formatter, left, false)?;
                formatter.write_str(" or ")?;
                write_operand(formatter, right, matches!(**right, Filter::Or(..)))
            }
            Filter::Not(inner) => write!(formatter, "not ({inner})"),
            Filter::ValuePath { path, filter } => write!(formatter, "{path}[{filter}]"),
        }
    }
}

fn write_operand(
    formatter: &mut fmt::Formatter<'_>,
    operand: &Filter,
    parenthesize: bool,
) -> fmt::Result {
    if parenthesize { write!(formatter, "({operand})") } else { write!(formatter, "{operand}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(name: &str, value: &str) -> Filter {
        Filter::Compare {
            path: AttrPath::named(name),
            op: CompareOp::Equal,
            value: CompareValue::String(value.to_owned()),
        }
    }

    #[test]
    fn prints_the_parentheses_precedence_needs_and_no_more() {
        let a = || Box::new(compare("a", "1"));
        let b = || Box::new(compare("b", "2"));
        let c = || Box::new(compare("c", "3"));
        let cases = [
            (
                Filter::And(Box::new(Filter::Or(a(), b())), c()),
                r#"(a eq "1" or b eq "2") and c eq "3""#,
            ),
            (
                Filter::Or(Box::new(Filter::And(a(), b())), c()),
                r#"a eq "1" and b eq "2" or c eq "3""#,
            ),
            (
                Filter::And(a(), Box::new(Filter::And(b(), c()))),
                r#"a eq "1" and (b eq "2" and c eq "3")"#,
            ),
            (
                Filter::And(Box::new(Filter::And(a(), b())), c()),
                r#"a eq "1" and b eq "2" and c eq "3""#,
            ),
            (Filter::Not(Box::new(Filter::Or(a(), b()))), r#"not (a eq "1" or b eq "2")"#),
        ];
        for (filter, text) in cases {
            assert_eq!(filter.to_string(), text);
        }
    }

    #[test]
    fn prints_paths_values_and_value_filters() {
        let filter = Filter::ValuePath {
            path: AttrPath::named("emails"),
            filter: Box::new(Filter::And(
                Box::new(compare("type", "wo\"rk")),
                Box::new(Filter::Compare {
                    path: AttrPath::named("primary"),
                    op: CompareOp::Equal,
                    value: CompareValue::Bool(true),
                }),
            )),
        };
        assert_eq!(filter.to_string(), r#"emails[type eq "wo\"rk" and primary eq true]"#);
        let manager = AttrPath {
            schema: Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".to_owned()),
            name: "manager".to_owned(),
            sub_attribute: Some("value".to_owned()),
        };
        assert_eq!(
            Filter::Present { path: manager }.to_string(),
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value pr"
        );
    }
}
