//! A pod's Prometheus text exposition turned into `scheduler::PodMetrics`, line by line.
//!
//! A scrape is read as it arrives ([`SeriesReader::line`] for each line, then
//! [`SeriesReader::finish`]): a line is kept only when its metric name is one of the series we
//! read, and then only its value (and, for the info series, its labels) is decoded. A vLLM scrape
//! is mostly histograms we ignore, so most lines cost one name comparison. Comments are
//! skipped: Python's Prometheus client (vLLM, SGLang) declares a counter `x` in `# TYPE` but
//! writes `x_total` samples, so type declarations say nothing reliable about the samples.

use std::borrow::Cow;
use std::time::Instant;

use scheduler::{CacheGeometry, PodMetrics};

use crate::metric_names::MetricNames;

/// Parses a whole exposition `text` scraped at `scraped_at`. Signals absent from the scrape keep
/// their neutral value (0 queued, 0 running, empty cache, no adapters); text that is not
/// Prometheus exposition, or that has none of the queue/KV signals, is an error.
pub fn parse(text: &str, names: &MetricNames, scraped_at: Instant) -> Result<PodMetrics, String> {
    let mut reader = SeriesReader::new(names);
    for line in text.split('\n') {
        reader.line(line.strip_suffix('\r').unwrap_or(line).as_bytes())?;
    }
    reader.finish(scraped_at)
}

/// Which pod signal a series carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signal {
    Waiting,
    Running,
    KvUsage,
    LoraInfo,
    CacheConfig,
    CacheTokens,
}

/// One candidate series name and what has been seen of it in the current scrape.
struct Series {
    name: Box<[u8]>,
    signal: Signal,
    /// Position among the signal's candidates: the first one present wins.
    rank: usize,
    seen: bool,
    sum: f64,
    max: f64,
    /// Info series: the sample line with the largest value so far (vLLM sets it to a time).
    newest: Vec<u8>,
    newest_value: f64,
}

/// Reads the series of one scrape at a time; reusable, so the buffers it keeps are not
/// allocated again for every scrape.
pub struct SeriesReader {
    series: Vec<Series>,
    waiting: Vec<String>,
    running: Vec<String>,
    kv_usage: Vec<String>,
}

impl SeriesReader {
    pub fn new(names: &MetricNames) -> SeriesReader {
        let mut series = Vec::new();
        let groups = [
            (&names.waiting, Signal::Waiting),
            (&names.running, Signal::Running),
            (&names.kv_usage, Signal::KvUsage),
            (&names.lora_info, Signal::LoraInfo),
            (&names.cache_config, Signal::CacheConfig),
            (&names.cache_tokens, Signal::CacheTokens),
        ];
        for (candidates, signal) in groups {
            for (rank, name) in candidates.iter().enumerate() {
                series.push(Series {
                    name: name.as_bytes().into(),
                    signal,
                    rank,
                    seen: false,
                    sum: 0.0,
                    max: 0.0,
                    newest: Vec::new(),
                    newest_value: f64::NEG_INFINITY,
                });
            }
        }
        SeriesReader {
            series,
            waiting: names.waiting.clone(),
            running: names.running.clone(),
            kv_usage: names.kv_usage.clone(),
        }
    }

    /// Takes one line of the exposition (without its line break).
    pub fn line(&mut self, line: &[u8]) -> Result<(), String> {
        if line.first().is_none_or(|&b| b == b'#') {
            return Ok(());
        }
        // The byte after a wanted name must end the name; testing it first rejects almost every
        // other line without comparing names (most lines are histogram buckets we ignore).
        let Some(series) = self.series.iter_mut().find(|s| {
            line.get(s.name.len())
                .is_none_or(|b| matches!(b, b'{' | b' ' | b'\t'))
                && line.starts_with(&s.name)
        }) else {
            return Ok(());
        };
        let name_end = series.name.len();
        let sample = Sample::parse(line, name_end).map_err(|e| {
            format!(
                "not Prometheus text: {e} in `{}`",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            )
        })?;
        series.seen = true;
        // Non-finite values (NaN, ±Inf) say nothing usable; the series still counts as present.
        if sample.value.is_finite() {
            series.sum += sample.value;
            series.max = series.max.max(sample.value);
        }
        if matches!(series.signal, Signal::LoraInfo | Signal::CacheConfig) {
            let value = if sample.value.is_nan() {
                0.0
            } else {
                sample.value
            };
            if series.newest.is_empty() || value >= series.newest_value {
                series.newest.clear();
                series.newest.extend_from_slice(line);
                series.newest_value = value;
            }
        }
        Ok(())
    }

    /// The pod's metrics from the lines taken since the last `finish`; resets the reader.
    pub fn finish(&mut self, scraped_at: Instant) -> Result<PodMetrics, String> {
        let result = self.metrics(scraped_at);
        for s in &mut self.series {
            s.seen = false;
            s.sum = 0.0;
            s.max = 0.0;
            s.newest.clear();
            s.newest_value = f64::NEG_INFINITY;
        }
        result
    }

    /// The first present candidate of `signal`.
    fn find(&self, signal: Signal) -> Option<&Series> {
        self.series
            .iter()
            .filter(|s| s.signal == signal && s.seen)
            .min_by_key(|s| s.rank)
    }

    fn metrics(&self, scraped_at: Instant) -> Result<PodMetrics, String> {
        let waiting = self.find(Signal::Waiting);
        let running = self.find(Signal::Running);
        let kv = self.find(Signal::KvUsage);
        if waiting.is_none() && running.is_none() && kv.is_none() {
            return Err(format!(
                "none of the expected series is present (waiting {:?}, running {:?}, kv usage {:?})",
                self.waiting, self.running, self.kv_usage
            ));
        }
        let mut metrics = PodMetrics::idle();
        metrics.scraped_at = scraped_at;
        metrics.waiting = waiting.map_or(0.0, |s| s.sum).max(0.0).round() as u32;
        metrics.running = running.map_or(0.0, |s| s.sum).max(0.0).round() as u32;
        metrics.kv_usage = kv.map_or(0.0, |s| s.max).clamp(0.0, 1.0);

        if let Some(info) = self.find(Signal::LoraInfo) {
            let labels = Labels::of(&info.newest);
            metrics.running_adapters = adapter_list(labels.get("running_lora_adapters"));
            metrics.waiting_adapters = adapter_list(labels.get("waiting_lora_adapters"));
            metrics.max_lora = labels.get("max_lora").and_then(|v| v.parse().ok());
        }
        if let Some(info) = self.find(Signal::CacheConfig) {
            let labels = Labels::of(&info.newest);
            let blocks = labels.get("num_gpu_blocks").and_then(|v| v.parse().ok());
            let size = labels.get("block_size").and_then(|v| v.parse().ok());
            if let (Some(num_gpu_blocks), Some(block_size)) = (blocks, size) {
                metrics.cache = Some(CacheGeometry {
                    num_gpu_blocks,
                    block_size,
                });
            }
        }
        if metrics.cache.is_none() {
            if let Some(tokens) = self
                .find(Signal::CacheTokens)
                .map(|s| s.max)
                .filter(|t| *t >= 1.0)
            {
                metrics.cache = Some(CacheGeometry {
                    num_gpu_blocks: tokens as u64,
                    block_size: 1,
                });
            }
        }
        Ok(metrics)
    }
}

/// The value of one sample line: `name{label="value",...} value [timestamp]`.
struct Sample {
    value: f64,
}

impl Sample {
    /// Checks the line's syntax past the name (which ends at `name_end`) and reads its value.
    fn parse(line: &[u8], name_end: usize) -> Result<Sample, &'static str> {
        let mut rest = &line[name_end..];
        if rest.first() == Some(&b'{') {
            let len = labels_len(rest)?;
            rest = &rest[len..];
        }
        let mut fields = rest
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|f| !f.is_empty());
        let value = fields.next().ok_or("no value")?;
        let value = std::str::from_utf8(value).map_err(|_| "a value that is not a number")?;
        let value = parse_value(value).ok_or("a value that is not a number")?;
        if let Some(timestamp) = fields.next() {
            std::str::from_utf8(timestamp)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or("a timestamp that is not an integer")?;
        }
        if fields.next().is_some() {
            return Err("text after the timestamp");
        }
        Ok(Sample { value })
    }
}

/// A Prometheus sample value: a float, `NaN`, `+Inf` or `-Inf`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        // Rust also reads "inf", "infinity" and "nan" in any case; the format does not have them.
        _ if text
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E')) =>
        {
            None
        }
        _ => text.parse().ok(),
    }
}

/// Length of the label set at the start of `text` (which starts with `{`), through its `}`.
fn labels_len(text: &[u8]) -> Result<usize, &'static str> {
    let mut i = 1;
    loop {
        while text.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        match text.get(i) {
            None => return Err("unterminated label set"),
            Some(b'}') => return Ok(i + 1),
            Some(_) => {}
        }
        let key_start = i;
        while text
            .get(i)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
        {
            i += 1;
        }
        if i == key_start {
            return Err("a label without a name");
        }
        while text.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        if text.get(i) != Some(&b'=') {
            return Err("a label without `=`");
        }
        i += 1;
        while text.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        if text.get(i) != Some(&b'"') {
            return Err("a label value without quotes");
        }
        i += 1;
        loop {
            match text.get(i) {
                None => return Err("unterminated label value"),
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        i += 1;
        while text.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        match text.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            _ => return Err("labels not separated by `,`"),
        }
    }
}

/// The labels of one (already checked) sample line, values unescaped.
struct Labels<'a>(Vec<(&'a str, Cow<'a, str>)>);

impl<'a> Labels<'a> {
    fn of(line: &'a [u8]) -> Labels<'a> {
        let mut labels = Vec::new();
        let Some(start) = line.iter().position(|&b| b == b'{') else {
            return Labels(labels);
        };
        let text = String::from_utf8_lossy(&line[start + 1..]);
        let Cow::Borrowed(mut rest) = text else {
            return Labels(labels); // not UTF-8: no label we could use
        };
        while let Some((key, after)) = rest.split_once('=') {
            let key = key.trim().trim_start_matches(',').trim();
            let Some(after) = after.trim_start().strip_prefix('"') else {
                break;
            };
            let mut end = None;
            let mut escaped = false;
            for (i, b) in after.bytes().enumerate() {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(end) = end else { break };
            labels.push((key, unescape(&after[..end])));
            rest = &after[end + 1..];
        }
        Labels(labels)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_ref())
    }
}

/// A label value with `\\`, `\"` and `\n` unescaped.
fn unescape(value: &str) -> Cow<'_, str> {
    if !value.contains('\\') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    Cow::Owned(out)
}

fn adapter_list(value: Option<&str>) -> Vec<Box<str>> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Into::into)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.42
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-lora",waiting_lora_adapters=""} 1.7e+09
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-lora,chat-lora",waiting_lora_adapters="x"} 1.8e+09
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="27000"} 1.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{model_name="m"} 1234.0
"#;

    #[test]
    fn vllm_text_becomes_pod_metrics() {
        let now = Instant::now();
        let m = parse(VLLM, &MetricNames::vllm(), now).unwrap();
        assert_eq!((m.waiting, m.running), (7, 3));
        assert!((m.kv_usage - 0.42).abs() < 1e-9);
        assert_eq!(
            m.running_adapters,
            vec!["sql-lora".into(), "chat-lora".into()] as Vec<Box<str>>
        );
        assert_eq!(m.waiting_adapters, vec!["x".into()] as Vec<Box<str>>);
        assert_eq!(m.max_lora, Some(2));
        assert_eq!(
            m.cache,
            Some(CacheGeometry {
                num_gpu_blocks: 27000,
                block_size: 16
            })
        );
        assert_eq!(m.scraped_at, now);
    }

    #[test]
    fn older_vllm_kv_name_is_a_fallback_and_label_sets_add_up() {
        let text = "vllm:gpu_cache_usage_perc 0.9\nvllm:num_requests_waiting{a=\"1\"} 2\nvllm:num_requests_waiting{a=\"2\"} 5\n";
        let m = parse(text, &MetricNames::vllm(), Instant::now()).unwrap();
        assert!((m.kv_usage - 0.9).abs() < 1e-9);
        assert_eq!(m.waiting, 7);
        assert_eq!(m.running, 0);
        assert!(m.cache.is_none() && m.max_lora.is_none());
    }

    #[test]
    fn sglang_names() {
        let text = "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name=\"m\"} 4\nsglang:num_running_reqs{model_name=\"m\"} 9\nsglang:token_usage{model_name=\"m\"} 0.25\nsglang:max_total_num_tokens{model_name=\"m\"} 500000\n";
        let m = parse(text, &MetricNames::sglang(), Instant::now()).unwrap();
        assert_eq!((m.waiting, m.running), (4, 9));
        assert!((m.kv_usage - 0.25).abs() < 1e-9);
        assert_eq!(m.cache.unwrap().tokens(), 500_000);
    }

    #[test]
    fn garbage_and_unrelated_metrics_are_errors() {
        assert!(parse("<html>oops</html>", &MetricNames::vllm(), Instant::now()).is_err());
        let e = parse(
            "process_cpu_seconds_total 12\n",
            &MetricNames::vllm(),
            Instant::now(),
        )
        .unwrap_err();
        assert!(e.contains("vllm:num_requests_waiting"), "{e}");
        // A series we read, but broken.
        let e = parse(
            "vllm:num_requests_waiting{model=\"m 3\n",
            &MetricNames::vllm(),
            Instant::now(),
        )
        .unwrap_err();
        assert!(e.starts_with("not Prometheus text"), "{e}");
        // vLLM text read with SGLang's names finds nothing.
        assert!(parse(VLLM, &MetricNames::sglang(), Instant::now()).is_err());
    }

    #[test]
    fn only_exact_names_count_and_labels_timestamps_and_escapes_are_read() {
        let text = "vllm:num_requests_waiting_total 100\n\
            vllm:num_requests_waiting{path=\"a\\\"}b\",x=\"y\"} 2 1700000000000\n\
            vllm:num_requests_running\t4\r\n\
            vllm:lora_requests_info{max_lora=\"3\", running_lora_adapters=\"a\\\\b,c\"} 5\n\
            vllm:lora_requests_info{max_lora=\"1\",running_lora_adapters=\"old\"} 4\n";
        let m = parse(text, &MetricNames::vllm(), Instant::now()).unwrap();
        assert_eq!((m.waiting, m.running), (2, 4));
        assert_eq!(m.max_lora, Some(3), "the newest info sample wins");
        assert_eq!(
            m.running_adapters,
            vec!["a\\b".into(), "c".into()] as Vec<Box<str>>
        );
        for bad in [
            "vllm:num_requests_waiting\n",
            "vllm:num_requests_waiting abc\n",
            "vllm:num_requests_waiting 1 2 3\n",
            "vllm:num_requests_waiting{a=b} 1\n",
            "vllm:num_requests_waiting{a=\"b\" c=\"d\"} 1\n",
            "vllm:num_requests_waiting 1 1.5\n",
            "vllm:num_requests_waiting inf\n",
        ] {
            let e = parse(bad, &MetricNames::vllm(), Instant::now()).unwrap_err();
            assert!(e.starts_with("not Prometheus text"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_reader_is_reused_from_one_scrape_to_the_next() {
        let mut reader = SeriesReader::new(&MetricNames::vllm());
        reader.line(b"vllm:num_requests_waiting 3").unwrap();
        assert_eq!(reader.finish(Instant::now()).unwrap().waiting, 3);
        reader.line(b"vllm:num_requests_running 1").unwrap();
        let m = reader.finish(Instant::now()).unwrap();
        assert_eq!((m.waiting, m.running), (0, 1), "nothing carried over");
        assert!(reader.finish(Instant::now()).is_err(), "an empty scrape");
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let text = "vllm:kv_cache_usage_perc 1.7\nvllm:num_requests_waiting -3\nvllm:num_requests_running NaN\n";
        let m = parse(text, &MetricNames::vllm(), Instant::now()).unwrap();
        assert_eq!(m.kv_usage, 1.0);
        assert_eq!((m.waiting, m.running), (0, 0));
    }
}

#[cfg(test)]
mod simulator_text {
    use super::*;

    /// What `inference-sim` serves on `/metrics` (captured after one request).
    const SIM: &str = include_str!("../tests/vllm_sim_metrics.txt");

    #[test]
    fn the_simulators_metrics_parse() {
        let m = parse(SIM, &MetricNames::vllm(), Instant::now()).unwrap();
        assert_eq!((m.waiting, m.running), (0, 0));
        assert!(
            m.cache
                .is_some_and(|c| c.block_size == 16 && c.num_gpu_blocks > 0),
            "{:?}",
            m.cache
        );
        assert!(
            m.max_lora.is_none(),
            "no LoRA series without adapters, as in vLLM"
        );
    }
}
