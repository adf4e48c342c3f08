//! `trustlog operations show|search`: the console's lookups from a shell, printing the
//! same JSON as `GET /v1/operations…` with `--json`. Read-only: whoever may read the
//! database URL may run them.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::args::{OperationsCommand, OperationsSearchArgs};
use crate::adapters::Adapters;
use crate::surfaces::http::lookup::{filter_from, parse_after};
use crate::surfaces::report::{found_json, search_page_json};

/// Runs `operations show` or `operations search`.
pub async fn run(cmd: OperationsCommand, adapters: &Adapters) -> anyhow::Result<ExitCode> {
    match cmd {
        OperationsCommand::Show { op_id, db, json } => {
            let db_url = db.db;
            let db = adapters
                .connect_database(&db_url)
                .await
                .with_context(|| format!("connecting to {db_url}"))?;
            let found = db
                .find_operation(&op_id)
                .await
                .with_context(|| format!("looking up {op_id:?}"))?;
            db.close().await;
            let Some(found) = found else {
                eprintln!("no operation {op_id:?} in {db_url}");
                return Ok(ExitCode::FAILURE);
            };
            let body = found_json(&found);
            if json {
                println!("{body}");
            } else {
                print_detail(&body);
            }
            Ok(ExitCode::SUCCESS)
        }
        OperationsCommand::Search(args) => search(args, adapters).await,
    }
}

async fn search(args: OperationsSearchArgs, adapters: &Adapters) -> anyhow::Result<ExitCode> {
    let given = |name: &str| -> Option<&str> {
        match name {
            "op_id" => args.op_id.as_deref(),
            "actor" => args.actor.as_deref(),
            "doid" => args.doid.as_deref(),
            "producer" => args.producer.as_deref(),
            "status" => args.status.as_deref(),
            "from" => args.from.as_deref(),
            "to" => args.to.as_deref(),
            _ => None,
        }
    };
    let filter = filter_from(given).map_err(|e| anyhow::anyhow!("{e}"))?;
    let after = args
        .after
        .as_deref()
        .map(parse_after)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = adapters
        .connect_database(&args.db.db)
        .await
        .with_context(|| format!("connecting to {}", args.db.db))?;
    let page = db
        .search_operations(&filter, after.as_ref(), args.limit)
        .await
        .context("searching operations")?;
    let count = if args.count {
        Some(
            db.count_operations(&filter)
                .await
                .context("counting operations")?,
        )
    } else {
        None
    };
    db.close().await;
    let body = search_page_json(&page, args.limit, count);
    if args.json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<27} {:<32} {:<16} {:<16} retry",
        "timestamp", "op_id", "actor", "status"
    );
    for row in body["operations"].as_array().into_iter().flatten() {
        println!(
            "{:<27} {:<32} {:<16} {:<16} {}",
            text(&row["timestamp"]),
            text(&row["op_id"]),
            text(&row["op_actor"]),
            text(&row["status"]),
            text(&row["retry_status"]),
        );
    }
    if let Some(n) = count {
        println!("{n} matching");
    }
    if let Some(next) = body["next_after"].as_str() {
        println!("next page: --after '{next}'");
    }
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_detail(body: &Value) {
    println!("op_id              {}", text(&body["op_id"]));
    println!("status             {}", text(&body["status"]));
    if let Some(op) = body["operation"].as_object() {
        for (k, v) in op.iter().filter(|(k, _)| *k != "op_id") {
            println!("{k:<18} {}", text(v));
        }
    }
    if !body["fault"].is_null() {
        println!("unreadable         {}", body["fault"]);
    }
    if let Some(r) = body["retry"].as_object() {
        for (k, v) in r {
            println!("{k:<18} {}", text(v));
        }
    }
    println!("envelope sha256    {}", text(&body["envelope"]["sha256"]));
    println!("envelope           {}", text(&body["envelope"]["payload"]));
}
