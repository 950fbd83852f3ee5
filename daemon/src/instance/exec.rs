//! Running commands in an instance: the exec helper (`ctld forkexec`, from
//! [`Instances::plan_exec`]) started through the worker, and the non-interactive exec that
//! records its output to the instance's log files. The exec websocket protocol (streams,
//! control messages) stays in `api/exec.rs`; the process is started and waited for here.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{ExecPlan, InstanceError, Instances};
use crate::worker::exec::{ExecChild, spawn_exec};

/// How long output still held open by something the command left behind is copied after
/// the command exited.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Where a recorded exec's output goes: `(stdout, stderr)` log files.
pub type Recording = Option<(PathBuf, PathBuf)>;

type Sink = Box<dyn AsyncWrite + Send + Unpin>;

/// An output file of a recorded exec (the guest's output: root's alone, like the console
/// log), or a sink that drops it.
async fn sink(path: Option<PathBuf>) -> std::io::Result<Sink> {
    let Some(p) = path else {
        return Ok(Box::new(tokio::io::sink()));
    };
    if let Some(dir) = p.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&p)
        .await?;
    Ok(Box::new(f))
}

/// Copy `from` to `to` in a task, flushing at the end.
fn pump(
    mut from: impl AsyncRead + Send + Unpin + 'static,
    mut to: Sink,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.flush().await;
    })
}

impl Instances {
    /// Start the exec helper of `plan` with piped stdio and its control pipe.
    pub fn spawn_exec(&self, plan: &ExecPlan) -> Result<ExecChild, InstanceError> {
        spawn_exec(&plan.program, &plan.args, &plan.env)
            .map_err(|e| InstanceError::Internal(format!("start exec helper: {e}")))
    }

    /// Run `plan` with no input to its end; its stdout and stderr go to the files of
    /// `record` (or nowhere). Returns the exit code (-1 when killed by a signal).
    pub async fn exec_recorded(
        &self,
        plan: &ExecPlan,
        record: Recording,
    ) -> Result<i32, InstanceError> {
        let ExecChild { mut child, control } = self.spawn_exec(plan)?;
        drop(control);
        drop(child.stdin.take());
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(InstanceError::Internal("exec helper pipes missing".into()));
        };
        let (out_path, err_path) = match record {
            Some((o, e)) => (Some(o), Some(e)),
            None => (None, None),
        };
        let record_err =
            |what: &str, e: std::io::Error| InstanceError::Internal(format!("record {what}: {e}"));
        let out_file = sink(out_path).await.map_err(|e| record_err("stdout", e))?;
        let err_file = sink(err_path).await.map_err(|e| record_err("stderr", e))?;
        let copies = [pump(out, out_file), pump(err, err_file)];
        let status = child
            .wait()
            .await
            .map_err(|e| InstanceError::Internal(format!("wait for command: {e}")))?;
        // Output held open by something the command left behind gets a grace, no more.
        for mut c in copies {
            if tokio::time::timeout(OUTPUT_GRACE, &mut c).await.is_err() {
                c.abort();
            }
        }
        Ok(status.code().unwrap_or(-1))
    }
}
