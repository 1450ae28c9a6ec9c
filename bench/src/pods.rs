//! The simulated pods: one `inference-sim` process hosting all of them, reset to cold between
//! targets, and their own counters read before and after each run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Pods {
    child: Child,
    /// `ip:port` of each pod.
    pub addrs: Vec<String>,
}

/// Totals over all pods of the counters a run is judged by.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PodCounters {
    pub prefix_queries: f64,
    pub prefix_hits: f64,
    pub preemptions: f64,
}

impl Pods {
    /// Starts `inference-sim` with `args` (which must include `--pods N --base-port 0`),
    /// optionally pinned to `cpus` with `taskset`, and waits for its `listening on` lines.
    pub fn start(
        sim: &Path,
        args: &[String],
        cpus: Option<&str>,
        log: &Path,
    ) -> Result<Pods, String> {
        let pods: usize = args
            .iter()
            .position(|a| a == "--pods")
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(1);
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(sim);
                c
            }
            None => Command::new(sim),
        };
        let stderr = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", sim.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut addrs = Vec::with_capacity(pods);
        while addrs.len() < pods {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some((_, addr)) = line.split_once("listening on ") {
                        addrs.push(addr.trim().to_string());
                    }
                }
                _ => {
                    let _ = child.kill();
                    return Err(format!(
                        "inference-sim exited before {pods} pods listened; see {}",
                        log.display()
                    ));
                }
            }
        }
        // Keep draining stdout so the simulator never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Pods { child, addrs })
    }

    pub fn urls(&self) -> Vec<String> {
        self.addrs.iter().map(|a| format!("http://{a}")).collect()
    }

    /// Cold pods: everything in flight aborted, prefix caches emptied, metrics zeroed.
    pub fn reset(&self) -> Result<(), String> {
        for url in self.urls() {
            ureq::post(&format!("{url}/admin/reset"))
                .timeout(Duration::from_secs(10))
                .call()
                .map_err(|e| format!("reset {url}: {e}"))?;
        }
        Ok(())
    }

    /// Sum of the pods' counters now.
    pub fn counters(&self) -> Result<PodCounters, String> {
        let mut total = PodCounters::default();
        for url in self.urls() {
            let text = ureq::get(&format!("{url}/metrics"))
                .timeout(Duration::from_secs(10))
                .call()
                .map_err(|e| format!("scrape {url}: {e}"))?
                .into_string()
                .map_err(|e| format!("scrape {url}: {e}"))?;
            total.prefix_queries += metric(&text, "vllm:prefix_cache_queries_total");
            total.prefix_hits += metric(&text, "vllm:prefix_cache_hits_total");
            total.preemptions += metric(&text, "vllm:num_preemptions_total");
        }
        Ok(total)
    }

    /// Prompt tokens per word of the bench's text on these pods (1 for the simulator's built-in
    /// tokenizer): the difference between two prompts' `usage.prompt_tokens` over the difference
    /// in words, so a BOS token or template does not count. Leaves cached blocks behind (the
    /// runner resets the pods before each target).
    pub fn tokens_per_word(&self, model: &str) -> Result<f64, String> {
        let url = format!("{}/v1/completions", self.urls()[0]);
        let mut rng = fastrand::Rng::with_seed(99);
        let mut count = |words: usize| -> Result<f64, String> {
            let body = serde_json::json!({
                "model": model,
                "prompt": crate::workload::words(&mut rng, words),
                "max_tokens": 1,
            });
            let text = ureq::post(&url)
                .set("content-type", "application/json")
                .timeout(Duration::from_secs(30))
                .send_string(&body.to_string())
                .map_err(|e| format!("probe {url}: {e}"))?
                .into_string()
                .map_err(|e| format!("probe {url}: {e}"))?;
            let usage: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("probe {url}: {e}"))?;
            usage["usage"]["prompt_tokens"]
                .as_f64()
                .ok_or_else(|| format!("probe {url}: no usage.prompt_tokens in {text}"))
        };
        let (short, long) = (count(100)?, count(1100)?);
        Ok((long - short) / 1000.0)
    }

    /// Requests each pod finished successfully (how a target spread the load).
    pub fn requests_per_pod(&self) -> Vec<f64> {
        self.urls()
            .iter()
            .map(|url| {
                ureq::get(&format!("{url}/metrics"))
                    .call()
                    .ok()
                    .and_then(|r| r.into_string().ok())
                    .map_or(0.0, |t| metric(&t, "vllm:request_success_total"))
            })
            .collect()
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of every sample of `name` (any labels) in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.chars().next()? {
                '{' => rest.rsplit_once('}')?.1,
                ' ' => rest,
                _ => return None, // a longer name with this prefix
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_labelled_samples_of_exactly_that_name() {
        let text = "# HELP vllm:prefix_cache_hits_total x\n\
            vllm:prefix_cache_hits_total{model_name=\"m\",engine=\"0\"} 120\n\
            vllm:prefix_cache_hits_total_other 5\n\
            vllm:request_success_total{finished_reason=\"length\"} 3\n\
            vllm:request_success_total{finished_reason=\"stop\"} 4.0\n\
            vllm:num_preemptions_total 2\n";
        assert_eq!(metric(text, "vllm:prefix_cache_hits_total"), 120.0);
        assert_eq!(metric(text, "vllm:request_success_total"), 7.0);
        assert_eq!(metric(text, "vllm:num_preemptions_total"), 2.0);
        assert_eq!(metric(text, "vllm:absent"), 0.0);
    }
}
