//! Queries over the spend log and the audit log, shared by both backends: the filters become one
//! `WHERE` clause with numbered parameters in the backend's placeholder style.

use crate::pricing::Micros;

/// A filtered, paginated read of the spend log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpendLogQuery {
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub end_user: Option<String>,
    pub model: Option<String>,
    pub request_id: Option<String>,
    /// Rows that started at or after this (unix ms).
    pub start_ms: Option<i64>,
    /// Rows that started before this (unix ms).
    pub end_ms: Option<i64>,
    pub offset: u64,
    pub limit: u64,
}

/// What the spend report groups by (besides the day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportGroup {
    Key,
    Team,
    Model,
    EndUser,
}

impl ReportGroup {
    /// The `spend_logs` column.
    pub fn column(self) -> &'static str {
        match self {
            ReportGroup::Key => "key_id",
            ReportGroup::Team => "team_id",
            ReportGroup::Model => "model",
            ReportGroup::EndUser => "end_user",
        }
    }

    /// The `group_by` query value and the JSON field of each row's group.
    pub fn name(self) -> &'static str {
        match self {
            ReportGroup::Key => "key",
            ReportGroup::Team => "team",
            ReportGroup::Model => "model",
            ReportGroup::EndUser => "user",
        }
    }

    pub fn parse(s: &str) -> Option<ReportGroup> {
        Some(match s {
            "key" | "api_key" | "key_id" => ReportGroup::Key,
            "team" | "team_id" => ReportGroup::Team,
            "model" => ReportGroup::Model,
            "user" | "customer" | "end_user" => ReportGroup::EndUser,
            _ => return None,
        })
    }
}

/// Spend per day and group, over a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportQuery {
    pub group: ReportGroup,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

/// One day × group of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// The group's value (`None`: requests without one, e.g. keyless).
    pub group: Option<String>,
    pub spend: Micros,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A filtered, paginated read of the audit log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    /// `keys`, `teams`, `customers`, `config`.
    pub table_name: Option<String>,
    pub object_id: Option<String>,
    pub action: Option<String>,
    pub changed_by: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub offset: u64,
    pub limit: u64,
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    Text(String),
    Int(i64),
}

/// `WHERE` conditions: `(column, operator, value)`.
#[derive(Debug, Default)]
pub(super) struct Filter {
    conds: Vec<(&'static str, &'static str, Param)>,
}

impl Filter {
    fn text(&mut self, col: &'static str, v: &Option<String>) {
        if let Some(v) = v {
            self.conds.push((col, "=", Param::Text(v.clone())));
        }
    }

    fn range(&mut self, col: &'static str, start: Option<i64>, end: Option<i64>) {
        if let Some(s) = start {
            self.conds.push((col, ">=", Param::Int(s)));
        }
        if let Some(e) = end {
            self.conds.push((col, "<", Param::Int(e)));
        }
    }

    /// ` WHERE a = <p1> AND b >= <p2>` (empty without conditions), numbering from `first`.
    pub(super) fn sql(&self, first: usize, placeholder: fn(usize) -> String) -> String {
        let mut s = String::new();
        for (i, (col, op, _)) in self.conds.iter().enumerate() {
            s.push_str(if i == 0 { " WHERE " } else { " AND " });
            s.push_str(col);
            s.push(' ');
            s.push_str(op);
            s.push(' ');
            s.push_str(&placeholder(first + i));
        }
        s
    }

    pub(super) fn params(&self) -> impl Iterator<Item = &Param> {
        self.conds.iter().map(|(_, _, p)| p)
    }

    pub(super) fn len(&self) -> usize {
        self.conds.len()
    }
}

impl SpendLogQuery {
    pub(super) fn filter(&self) -> Filter {
        let mut f = Filter::default();
        f.text("key_id", &self.key_id);
        f.text("team_id", &self.team_id);
        f.text("end_user", &self.end_user);
        f.text("model", &self.model);
        f.text("request_id", &self.request_id);
        f.range("start_ms", self.start_ms, self.end_ms);
        f
    }
}

impl ReportQuery {
    pub(super) fn filter(&self) -> Filter {
        let mut f = Filter::default();
        f.range("start_ms", self.start_ms, self.end_ms);
        f
    }
}

impl AuditQuery {
    pub(super) fn filter(&self) -> Filter {
        let mut f = Filter::default();
        f.text("table_name", &self.table_name);
        f.text("object_id", &self.object_id);
        f.text("action", &self.action);
        f.text("changed_by", &self.changed_by);
        f.range("updated_at_ms", self.start_ms, self.end_ms);
        f
    }
}

/// The spend-log columns, in the order both backends insert and select them (after `id`).
pub(super) const SPEND_LOG_COLUMNS: &str = "request_id, key_id, team_id, end_user, model, \
     deployment, prompt_tokens, cached_tokens, cache_write_tokens, completion_tokens, \
     reasoning_tokens, cost_micros, priced, cache_hit, batch_id, status, start_ms, end_ms";

/// The audit-log columns, in the order both backends select them.
pub(super) const AUDIT_COLUMNS: &str = "id, updated_at_ms, changed_by, action, table_name, \
     object_id, before_value, updated_values";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_clauses_number_their_parameters() {
        let q = SpendLogQuery {
            key_id: Some("k1".into()),
            model: Some("m".into()),
            start_ms: Some(5),
            ..Default::default()
        };
        let f = q.filter();
        assert_eq!(
            f.sql(1, |i| format!("${i}")),
            " WHERE key_id = $1 AND model = $2 AND start_ms >= $3"
        );
        assert_eq!(
            f.params().cloned().collect::<Vec<_>>(),
            vec![
                Param::Text("k1".into()),
                Param::Text("m".into()),
                Param::Int(5)
            ]
        );
        assert_eq!(
            SpendLogQuery::default()
                .filter()
                .sql(1, |i| format!("?{i}")),
            ""
        );
    }
}
