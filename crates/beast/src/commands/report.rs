//! `beast report usage|summary`: the same reports as the report listener, in the same
//! formats. With `--url` it asks a running node (with `--api-key`/`BEAST_API_KEY`, so the
//! key's scope, allowance and logging apply); without it, it reads the store directly with
//! the admin's view. The body goes to stdout; a usage page's next cursor goes to stderr.

use anyhow::{Context, bail};
use beast_reports::{Report, ReportParams, query::format_cursor, usage};
use beast_store::Store;
use tokio::io::AsyncWriteExt;

use crate::{
    app::Params,
    cli::{ReportArgs, ReportCommand},
    config::{ConfigArgs, KeyFlag},
};

pub async fn run(config: &ConfigArgs, command: ReportCommand) -> anyhow::Result<()> {
    let (report, args) = match command {
        ReportCommand::Usage(a) => (Report::Usage, a),
        ReportCommand::Summary(a) => (Report::Summary, a),
    };
    match &args.url {
        Some(url) => remote(url, report, &args).await,
        None => {
            if KeyFlag::given(&args.api_key).is_some() {
                note!(
                    "note: without --url the store is read directly, as the admin; the key is not used"
                );
            }
            super::with_store(config, async |store| local(store, report, &args).await).await
        }
    }
}

async fn stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    out.write_all(bytes)
        .await
        .map_err(super::StdoutClosed::or_other)?;
    out.flush().await.map_err(super::StdoutClosed::or_other)
}

/// Asks a node's report listener and streams its answer to stdout.
async fn remote(url: &str, report: Report, args: &ReportArgs) -> anyhow::Result<()> {
    let Some(key) = KeyFlag::given(&args.api_key) else {
        bail!("--url needs a key: --api-key or BEAST_API_KEY (an API key or the admin key)");
    };
    let query = serde_urlencoded::to_string(args).context("encoding the filters")?;
    let endpoint = format!(
        "{}/reports/{}?{query}",
        url.trim_end_matches('/'),
        report.as_str()
    );
    let mut response = reqwest::Client::new()
        .get(&endpoint)
        .bearer_auth(key.expose())
        .send()
        .await
        .with_context(|| format!("asking {endpoint}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("the node answered {status}: {body}");
    }
    let next = response
        .headers()
        .get("x-next-cursor")
        .and_then(|c| c.to_str().ok())
        .map(str::to_owned);
    while let Some(chunk) = response.chunk().await.context("reading the answer")? {
        stdout(&chunk).await?;
    }
    print_next(next);
    Ok(())
}

/// The next page's cursor, after the page, on stderr (stdout holds only the report).
fn print_next(cursor: Option<String>) {
    if let Some(cursor) = cursor {
        note!("next cursor: {cursor}");
    }
}

/// Reads the report from the store directly (every key's usage unless `--key-id`).
async fn local(store: &dyn Store, report: Report, args: &ReportArgs) -> anyhow::Result<()> {
    let options = Params::from_rows(&store.parameters().await?).reports;
    let params: ReportParams = serde_urlencoded::from_str(
        &serde_urlencoded::to_string(args).context("encoding the filters")?,
    )
    .context("reading the filters")?;
    let request = params.check(options.page_size_max)?;
    match beast_reports::answer(store, report, &request).await? {
        Some(page) => {
            stdout(&page.body).await?;
            print_next(page.next_cursor.map(format_cursor));
        }
        None => {
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            // Owns the receiver: when printing stops (stdout closed), dropping it ends the
            // export at its next send instead of leaving it waiting for room forever.
            let print = async move {
                while let Some(chunk) = rx.recv().await {
                    let chunk: bytes::Bytes = chunk?;
                    stdout(&chunk).await?;
                }
                anyhow::Ok(())
            };
            let (exported, printed) = tokio::join!(usage::export(store, &request, tx), print);
            // Our own printing failed first if the reader went (stdout closed, say).
            printed?;
            if let usage::ExportEnd::Failed(e) = exported.end {
                return Err(e.into());
            }
        }
    }
    Ok(())
}
