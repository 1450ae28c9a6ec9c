//! One pod's engine: a single task that steps the batch the way vLLM's V1 scheduler does.
//!
//! Each step, running sequences go first (a decode token each, or the next chunk of a prefill),
//! then waiting requests are admitted in arrival order while the token budget, the batch size,
//! the KV cache and the adapter slots allow. A running sequence that needs a block when none is
//! free preempts the newest running sequence, which later recomputes (mostly from the prefix
//! cache). The step then lasts as long as `timing` says, and every sequence whose KV is
//! complete emits a token. Running the whole pod as one loop, rather than a timer per request,
//! is what lets one core simulate thousands of concurrent streams.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::PodConfig;
use crate::kv_cache::{block_hash, BlockHash, BlockId, CacheChange, KvCache};
use crate::kv_events::{EventSink, KvEvent};
use crate::lora::{AdapterSlots, Residency};
use crate::metrics::Metrics;
use crate::progress::{Finish, Progress};
use crate::timing::{step_duration, StepWork};
use crate::tokenizer::{output_token_id, output_word};

/// A request the HTTP layer has parsed and validated.
pub struct Request {
    pub prompt: Vec<u32>,
    /// Chained hashes of the prompt's full blocks.
    pub block_hashes: Vec<BlockHash>,
    /// Tokens to generate.
    pub max_tokens: u32,
    /// How the request ends after `max_tokens` tokens.
    pub finish: Finish,
    pub adapter: Option<usize>,
    /// Picks the generated words.
    pub seed: u64,
    /// Ids of the generated words (`OUTPUT_WORDS`) under `--tokenizer`; the built-in
    /// tokenizer's without.
    pub output_ids: Option<Arc<[u32]>>,
    pub progress: Arc<Progress>,
}

pub enum Command {
    Submit(Request),
    /// Abort everything, forget the cache and adapters, and start counting metrics afresh.
    Reset {
        metrics: Arc<Metrics>,
        done: oneshot::Sender<()>,
    },
}

/// If the loop falls further behind simulated time than this (the process is overloaded or was
/// descheduled), it stops trying to catch up, so a long stall does not turn into a burst.
const MAX_LAG: Duration = Duration::from_millis(250);

/// Steps run back to back while catching up before the engine lets other tasks run.
const MAX_STEPS_WITHOUT_YIELD: u32 = 16;

struct Sequence {
    request: Request,
    arrived: Instant,
    blocks: Vec<BlockId>,
    /// Tokens whose KV is in the cache.
    computed: usize,
    generated: u32,
    admitted_once: bool,
    last_token_at: Option<Instant>,
}

impl Sequence {
    /// Prompt plus generated tokens: what must be in the KV cache before the next token.
    fn known_tokens(&self) -> usize {
        self.request.prompt.len() + self.generated as usize
    }

    fn token_at(&self, position: usize) -> u32 {
        let prompt = &self.request.prompt;
        match prompt.get(position) {
            Some(&id) => id,
            None => {
                let index = (position - prompt.len()) as u32;
                match &self.request.output_ids {
                    Some(ids) => ids[output_word(self.request.seed, index)],
                    None => output_token_id(self.request.seed, index),
                }
            }
        }
    }

    /// Hashes the full blocks of generated text too, so a follow-up turn that sends the
    /// completion back hits the cache, as in vLLM.
    fn hash_blocks_up_to(&mut self, full_blocks: usize, block_size: usize, scratch: &mut Vec<u32>) {
        while self.request.block_hashes.len() < full_blocks {
            let index = self.request.block_hashes.len();
            scratch.clear();
            scratch
                .extend((index * block_size..(index + 1) * block_size).map(|p| self.token_at(p)));
            let parent = self.request.block_hashes.last().copied().unwrap_or(0);
            self.request
                .block_hashes
                .push(block_hash(parent, scratch, self.request.adapter));
        }
    }
}

/// Adds block `block` of `seq` to the events: to the last `BlockStored` when `extend` (the
/// block before it was stored in this same run), else as a new one chained to its parent.
fn note_stored(
    events: &mut Vec<KvEvent>,
    seq: &Sequence,
    block: usize,
    config: &PodConfig,
    extend: bool,
) {
    let size = config.block_size;
    let hash = seq.request.block_hashes[block];
    let tokens = (block * size..(block + 1) * size).map(|p| seq.token_at(p));
    if let (
        true,
        Some(KvEvent::BlockStored {
            block_hashes,
            token_ids,
            ..
        }),
    ) = (extend, events.last_mut())
    {
        block_hashes.push(hash);
        token_ids.extend(tokens);
        return;
    }
    let adapter = seq.request.adapter;
    events.push(KvEvent::BlockStored {
        block_hashes: vec![hash],
        parent_block_hash: block.checked_sub(1).map(|p| seq.request.block_hashes[p]),
        token_ids: tokens.collect(),
        block_size: size,
        lora_id: adapter.map(|a| a as u64 + 1),
        lora_name: adapter.and_then(|a| config.lora_adapters.get(a).cloned()),
    });
}

/// A sequence's share of one step.
struct Scheduled {
    running_index: usize,
    tokens: usize,
}

pub struct Engine {
    config: Arc<PodConfig>,
    cache: KvCache,
    adapters: AdapterSlots,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    metrics: Arc<Metrics>,
    /// When the last simulated step ends; steps are laid end to end on this clock.
    clock: Instant,
    /// Adapters with running / waiting requests, as last published.
    published_adapters: (Vec<bool>, Vec<bool>),
    /// Reused buffers for working out the adapters in use at each step.
    adapter_scratch: (Vec<bool>, Vec<bool>),
    scratch: Vec<u32>,
    /// Where the pod's KV events go, when it publishes them.
    events: Option<EventSink>,
    /// Events of the current step, published together as one batch (as vLLM does per step).
    pending_events: Vec<KvEvent>,
    cache_changes: Vec<CacheChange>,
}

impl Engine {
    pub fn new(config: Arc<PodConfig>, metrics: Arc<Metrics>, events: Option<EventSink>) -> Self {
        let adapters = config.lora_adapters.len();
        let engine = Self {
            cache: KvCache::with_change_log(config.kv_blocks, events.is_some()),
            events,
            pending_events: Vec::new(),
            cache_changes: Vec::new(),
            adapters: AdapterSlots::new(adapters, config.max_loras),
            waiting: VecDeque::new(),
            running: Vec::new(),
            metrics,
            clock: Instant::now(),
            published_adapters: (vec![false; adapters], vec![false; adapters]),
            adapter_scratch: (Vec::new(), Vec::new()),
            scratch: Vec::with_capacity(config.block_size),
            config,
        };
        engine
            .metrics
            .set_lora_requests(String::new(), String::new());
        engine
    }

    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut plan = Vec::new();
        let mut steps_behind = 0;
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match commands.recv().await {
                    Some(command) => self.handle(command),
                    None => return self.abort_all(),
                }
                self.clock = Instant::now();
            }
            loop {
                match commands.try_recv() {
                    Ok(command) => self.handle(command),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return self.abort_all(),
                }
            }
            self.drop_cancelled();
            plan.clear();
            let work = self.schedule(&mut plan);
            self.publish_state();
            if work.is_empty() {
                // Only reachable when everything was cancelled; never spin while stuck.
                if !(self.running.is_empty() && self.waiting.is_empty()) {
                    match commands.recv().await {
                        Some(command) => self.handle(command),
                        None => return self.abort_all(),
                    }
                }
                continue;
            }
            let now = Instant::now();
            if now > self.clock + MAX_LAG {
                self.clock = now;
            }
            self.clock += self.config.scaled(step_duration(&self.config, &work));
            if self.clock > now {
                tokio::time::sleep_until(self.clock).await;
                steps_behind = 0;
            } else if steps_behind >= MAX_STEPS_WITHOUT_YIELD {
                tokio::task::yield_now().await;
                steps_behind = 0;
            } else {
                // Behind simulated time: catch up without queueing behind every connection.
                // Sequences then get several tokens at once, which their responses write
                // together, so delivery keeps the modelled token rate under load.
                steps_behind += 1;
            }
            self.complete_step(&plan, Instant::now());
            self.publish_state();
            self.flush_events();
        }
    }

    /// Publishes this step's cache events as one batch: evictions first (they happened while
    /// scheduling), then the blocks stored when the step completed.
    fn flush_events(&mut self) {
        let Some(sink) = &self.events else { return };
        self.cache.take_changes(&mut self.cache_changes);
        if self.cache_changes.is_empty() && self.pending_events.is_empty() {
            return;
        }
        let mut batch = Vec::with_capacity(self.cache_changes.len() + self.pending_events.len());
        batch.extend(self.cache_changes.drain(..).map(|change| match change {
            CacheChange::Removed(hash) => KvEvent::BlockRemoved {
                block_hashes: vec![hash],
            },
            CacheChange::Cleared => KvEvent::AllBlocksCleared,
        }));
        batch.append(&mut self.pending_events);
        sink.publish(batch);
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Submit(request) => self.waiting.push_back(Sequence {
                request,
                arrived: Instant::now(),
                blocks: Vec::new(),
                computed: 0,
                generated: 0,
                admitted_once: false,
                last_token_at: None,
            }),
            Command::Reset { metrics, done } => {
                self.abort_all();
                self.cache.clear_cached();
                self.adapters.clear();
                self.metrics = metrics;
                self.published_adapters.0.fill(false);
                self.published_adapters.1.fill(false);
                self.metrics.set_lora_requests(String::new(), String::new());
                self.publish_state();
                self.flush_events();
                let _ = done.send(());
            }
        }
    }

    fn schedule(&mut self, plan: &mut Vec<Scheduled>) -> StepWork {
        let block_size = self.config.block_size;
        let mut budget = self.config.max_batched_tokens;
        let mut work = StepWork::default();
        let mut preempted = false;

        let mut index = 0;
        while index < self.running.len() && budget > 0 {
            let seq = &self.running[index];
            let tokens = (seq.known_tokens() - seq.computed).min(budget);
            let needed = (seq.computed + tokens)
                .div_ceil(block_size)
                .saturating_sub(seq.blocks.len());
            while !self.cache.can_allocate(&[], needed) && index < self.running.len() {
                self.preempt(self.running.len() - 1);
                preempted = true;
            }
            if index == self.running.len() {
                break; // it preempted itself
            }
            let seq = &mut self.running[index];
            self.cache.allocate(needed, &mut seq.blocks);
            account(&mut work, seq, tokens);
            plan.push(Scheduled {
                running_index: index,
                tokens,
            });
            budget -= tokens;
            index += 1;
        }

        // vLLM admits nothing in a step that had to preempt: memory is short.
        let mut position = 0;
        while !preempted
            && budget > 0
            && self.running.len() < self.config.max_running_seqs
            && position < self.waiting.len()
        {
            let seq = &self.waiting[position];
            let known = seq.known_tokens();
            // The last token is always computed, to produce the next one.
            let max_hits = (known - 1) / block_size;
            let hashes = &seq.request.block_hashes[..seq.request.block_hashes.len().min(max_hits)];
            let hits = self.cache.cached_prefix_len(hashes);
            let cached_tokens = hits * block_size;
            let tokens = (known - cached_tokens).min(budget);
            let needed = (cached_tokens + tokens).div_ceil(block_size) - hits;
            if !self.cache.can_allocate(&hashes[..hits], needed) {
                break; // first come, first served: later requests wait behind this one
            }
            if let Some(adapter) = seq.request.adapter {
                match self.adapters.ensure_resident(adapter) {
                    Residency::AlreadyResident => {}
                    Residency::LoadedNow => work.adapter_loads += 1,
                    Residency::NoFreeSlot => {
                        position += 1; // others may run while this adapter waits for a slot
                        continue;
                    }
                }
            }
            let mut seq = self.waiting.remove(position).expect("position is in range");
            let hit_hashes = &seq.request.block_hashes[..hits];
            self.cache.acquire_cached(hit_hashes, &mut seq.blocks);
            self.cache.allocate(needed, &mut seq.blocks);
            seq.computed = cached_tokens;
            if !seq.admitted_once {
                seq.admitted_once = true;
                let prompt_len = seq.request.prompt.len() as u64;
                self.metrics.prefix_cache_queries.inc_by(prompt_len);
                self.metrics.prefix_cache_hits.inc_by(cached_tokens as u64);
                self.metrics.prompt_tokens.inc_by(prompt_len);
                self.metrics
                    .request_queue_time
                    .observe(seq.arrived.elapsed().as_secs_f64());
                seq.request.progress.set_cached_tokens(cached_tokens as u32);
            }
            if let Some(adapter) = seq.request.adapter {
                self.adapters.start_running(adapter);
            }
            account(&mut work, &seq, tokens);
            plan.push(Scheduled {
                running_index: self.running.len(),
                tokens,
            });
            self.running.push(seq);
            budget -= tokens;
        }
        work
    }

    fn complete_step(&mut self, plan: &[Scheduled], now: Instant) {
        let block_size = self.config.block_size;
        let mut any_finished = false;
        // Evictions of this step's scheduling come before the blocks it stores.
        if self.events.is_some() {
            self.cache.take_changes(&mut self.cache_changes);
        }
        for step in plan {
            let seq = &mut self.running[step.running_index];
            let full_before = seq.computed / block_size;
            seq.computed += step.tokens;
            let full_now = seq.computed / block_size;
            if full_now > full_before {
                seq.hash_blocks_up_to(full_now, block_size, &mut self.scratch);
                let mut previous_stored = false;
                for block in full_before..full_now {
                    let stored = self
                        .cache
                        .register(seq.blocks[block], seq.request.block_hashes[block]);
                    if stored && self.events.is_some() {
                        let extend = previous_stored;
                        note_stored(&mut self.pending_events, seq, block, &self.config, extend);
                    }
                    previous_stored = stored;
                }
            }
            if seq.computed < seq.known_tokens() {
                continue; // a prefill chunk with more to come
            }
            seq.generated += 1;
            self.metrics.generation_tokens.inc();
            match seq.last_token_at {
                None => self
                    .metrics
                    .time_to_first_token
                    .observe((now - seq.arrived).as_secs_f64()),
                Some(last) => self
                    .metrics
                    .inter_token_latency
                    .observe((now - last).as_secs_f64()),
            }
            seq.last_token_at = Some(now);
            seq.request.progress.emit(seq.generated);
            any_finished |= seq.generated >= seq.request.max_tokens;
        }
        if any_finished {
            self.retire_running(
                |seq| seq.generated >= seq.request.max_tokens,
                |seq| seq.request.finish,
            );
        }
    }

    /// Removes the running sequences `done` selects, releasing their KV cache and adapters.
    fn retire_running(
        &mut self,
        done: impl Fn(&Sequence) -> bool,
        outcome: impl Fn(&Sequence) -> Finish,
    ) {
        let mut index = 0;
        while index < self.running.len() {
            if !done(&self.running[index]) {
                index += 1;
                continue;
            }
            let seq = self.running.remove(index);
            self.cache.release(&seq.blocks);
            if let Some(adapter) = seq.request.adapter {
                self.adapters.stop_running(adapter);
            }
            let finish = outcome(&seq);
            if finish != Finish::Aborted {
                self.metrics.count_success(finish);
                self.metrics
                    .e2e_request_latency
                    .observe(seq.arrived.elapsed().as_secs_f64());
            }
            seq.request.progress.finish(finish);
        }
    }

    fn preempt(&mut self, running_index: usize) {
        let mut seq = self.running.remove(running_index);
        self.cache.release(&seq.blocks);
        seq.blocks.clear();
        seq.computed = 0;
        if let Some(adapter) = seq.request.adapter {
            self.adapters.stop_running(adapter);
        }
        self.metrics.num_preemptions.inc();
        self.waiting.push_front(seq);
    }

    fn drop_cancelled(&mut self) {
        self.waiting
            .retain(|seq| !seq.request.progress.is_cancelled());
        if self
            .running
            .iter()
            .any(|seq| seq.request.progress.is_cancelled())
        {
            self.retire_running(
                |seq| seq.request.progress.is_cancelled(),
                |_| Finish::Aborted,
            );
        }
    }

    fn abort_all(&mut self) {
        self.retire_running(|_| true, |_| Finish::Aborted);
        for seq in self.waiting.drain(..) {
            seq.request.progress.finish(Finish::Aborted);
        }
        self.publish_state();
    }

    fn publish_state(&mut self) {
        self.metrics
            .num_requests_running
            .set(self.running.len() as i64);
        self.metrics
            .num_requests_waiting
            .set(self.waiting.len() as i64);
        self.metrics.set_kv_cache_usage(self.cache.usage());
        if self.config.lora_adapters.is_empty() {
            return;
        }
        // Which adapters have running / waiting requests, in reused buffers.
        let adapters = self.config.lora_adapters.len();
        let mut current = std::mem::take(&mut self.adapter_scratch);
        for set in [&mut current.0, &mut current.1] {
            set.clear();
            set.resize(adapters, false);
        }
        for adapter in self.running.iter().filter_map(|seq| seq.request.adapter) {
            current.0[adapter] = true;
        }
        for adapter in self.waiting.iter().filter_map(|seq| seq.request.adapter) {
            current.1[adapter] = true;
        }
        if current != self.published_adapters {
            let names = |set: &[bool]| {
                let names = self.config.lora_adapters.iter().zip(set);
                let selected = names.filter(|(_, on)| **on).map(|(name, _)| name.as_str());
                selected.collect::<Vec<_>>().join(",")
            };
            self.metrics
                .set_lora_requests(names(&current.0), names(&current.1));
            std::mem::swap(&mut current, &mut self.published_adapters);
        }
        self.adapter_scratch = current;
    }
}

/// Adds a sequence's share of a step to the step's work.
fn account(work: &mut StepWork, seq: &Sequence, tokens: usize) {
    let decoding = seq.generated > 0 && tokens == 1 && seq.computed + 1 == seq.known_tokens();
    if decoding {
        work.decode_seqs += 1;
        work.decode_context_tokens += seq.computed + 1;
    } else {
        work.prefill_tokens += tokens;
        work.prefill_attention_pairs += tokens as f64 * (seq.computed as f64 + tokens as f64 / 2.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::extend_block_hashes;

    /// An engine on tokio's paused clock: steps take their simulated time, instantly.
    struct Harness {
        config: Arc<PodConfig>,
        commands: mpsc::UnboundedSender<Command>,
        metrics: Arc<Metrics>,
    }

    impl Harness {
        fn start(config: PodConfig) -> Self {
            config.validate().unwrap();
            let config = Arc::new(config);
            let metrics = Arc::new(Metrics::new(&config));
            let (commands, inbox) = mpsc::unbounded_channel();
            tokio::spawn(Engine::new(config.clone(), metrics.clone(), None).run(inbox));
            Self {
                config,
                commands,
                metrics,
            }
        }

        fn submit(
            &self,
            prompt: Vec<u32>,
            max_tokens: u32,
            adapter: Option<usize>,
        ) -> Arc<Progress> {
            let mut block_hashes = Vec::new();
            extend_block_hashes(&mut block_hashes, &prompt, self.config.block_size, adapter);
            let progress = Arc::new(Progress::default());
            let request = Request {
                seed: prompt.len() as u64,
                output_ids: None,
                prompt,
                block_hashes,
                max_tokens,
                finish: Finish::Length,
                adapter,
                progress: progress.clone(),
            };
            assert!(self.commands.send(Command::Submit(request)).is_ok());
            progress
        }

        /// Runs one request to the end; returns its time to first token.
        async fn ttft(
            &self,
            prompt: Vec<u32>,
            max_tokens: u32,
            adapter: Option<usize>,
        ) -> Duration {
            let start = Instant::now();
            let progress = self.submit(prompt, max_tokens, adapter);
            let first = first_token(&progress).await;
            assert_eq!(progress.finished().await.generated, max_tokens);
            first - start
        }
    }

    /// When the first token arrives (the paused clock stands still while tasks run).
    async fn first_token(progress: &Progress) -> Instant {
        std::future::poll_fn(|cx| progress.poll_update(cx, 0)).await;
        Instant::now()
    }

    fn prompt(first: u32, len: usize) -> Vec<u32> {
        (first..first + len as u32).collect()
    }

    fn small(kv_blocks: usize) -> PodConfig {
        PodConfig {
            kv_blocks,
            max_model_len: kv_blocks * 16,
            ..PodConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_prefix_lowers_ttft_and_counts_as_hits() {
        let pod = Harness::start(PodConfig::default());
        let cold = pod.ttft(prompt(0, 4000), 4, None).await;
        let warm = pod.ttft(prompt(0, 4000), 4, None).await;
        // 4000 uncached tokens take ~160 ms to prefill; the warm run recomputes one block.
        assert!(cold > Duration::from_millis(150), "cold TTFT {cold:?}");
        assert!(warm < Duration::from_millis(10), "warm TTFT {warm:?}");
        assert_eq!(pod.metrics.prefix_cache_queries.get(), 8000);
        assert_eq!(
            pod.metrics.prefix_cache_hits.get(),
            3984,
            "all full blocks but the last token's"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_drops_the_least_recently_used_prefix_first() {
        // 300 blocks; each prompt fills 125. The third prompt must evict 75 blocks: the tail of
        // the oldest prompt (A), leaving the head of A and all of B cached.
        let pod = Harness::start(small(300));
        let (a, b, c) = (prompt(0, 2000), prompt(10_000, 2000), prompt(20_000, 2000));
        for p in [&a, &b, &c] {
            pod.ttft(p.clone(), 1, None).await;
        }
        let hits_before = pod.metrics.prefix_cache_hits.get();
        pod.ttft(b.clone(), 1, None).await;
        let hits_b = pod.metrics.prefix_cache_hits.get() - hits_before;
        pod.ttft(a.clone(), 1, None).await;
        let hits_a = pod.metrics.prefix_cache_hits.get() - hits_before - hits_b;
        assert_eq!(hits_b, 1984, "the more recent prompt survives whole");
        // Re-running B recomputed its last block into a fresh block, evicting one more of A's.
        assert_eq!(hits_a, 49 * 16, "only the oldest prompt's head survives");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_when_the_batch_is_full() {
        let pod = Harness::start(PodConfig {
            max_running_seqs: 4,
            ..PodConfig::default()
        });
        let start = Instant::now();
        let requests: Vec<_> = (0..10)
            .map(|i| {
                let progress = pod.submit(prompt(i * 1000, 100), 50, None);
                tokio::spawn(async move {
                    let first = first_token(&progress).await;
                    progress.finished().await;
                    first
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(pod.metrics.num_requests_running.get(), 4);
        assert_eq!(pod.metrics.num_requests_waiting.get(), 6);
        let mut firsts = Vec::new();
        for request in requests {
            firsts.push(request.await.unwrap());
        }
        let first = firsts[0] - start;
        let last = firsts[9] - start;
        assert!(
            last > first * 5,
            "queued request TTFT {last:?} vs {first:?}"
        );
        assert_eq!(pod.metrics.num_requests_running.get(), 0);
        assert_eq!(pod.metrics.num_requests_waiting.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_when_the_kv_cache_is_full() {
        // 100 blocks hold one 1000-token prompt (63 blocks) at a time.
        let pod = Harness::start(small(100));
        let first = pod.submit(prompt(0, 1000), 20, None);
        let second = pod.submit(prompt(5000, 1000), 20, None);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(pod.metrics.num_requests_running.get(), 1);
        assert_eq!(pod.metrics.num_requests_waiting.get(), 1);
        assert!(pod.metrics.num_requests_running.get() == 1 && (0.6..0.7).contains(&usage(&pod)));
        first.finished().await;
        assert_eq!(second.finished().await.generated, 20);
    }

    fn usage(pod: &Harness) -> f64 {
        pod.metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("vllm:kv_cache_usage_perc"))
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn preempted_sequences_resume_and_finish() {
        // 4 sequences growing to 240 tokens (15 blocks) each cannot share 30 blocks.
        let pod = Harness::start(small(30));
        let requests: Vec<_> = (0..4)
            .map(|i| pod.submit(prompt(i * 1000, 40), 200, None))
            .collect();
        for progress in &requests {
            assert_eq!(progress.finished().await.generated, 200);
        }
        assert!(pod.metrics.num_preemptions.get() > 0);
        assert_eq!(pod.metrics.generation_tokens.get(), 800);
        assert_eq!(usage(&pod), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_agree_with_what_was_served() {
        let pod = Harness::start(PodConfig::default());
        let sizes = [(10usize, 1u32), (300, 7), (1000, 30), (17, 100), (4096, 3)];
        let requests: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &(len, max))| pod.submit(prompt(i as u32 * 10_000, len), max, None))
            .collect();
        for (progress, &(_, max)) in requests.iter().zip(&sizes) {
            assert_eq!(progress.finished().await.generated, max);
        }
        let prompt_tokens: usize = sizes.iter().map(|(len, _)| len).sum();
        let generated: u32 = sizes.iter().map(|(_, max)| max).sum();
        let m = &pod.metrics;
        assert_eq!(m.prompt_tokens.get(), prompt_tokens as u64);
        assert_eq!(m.prefix_cache_queries.get(), prompt_tokens as u64);
        assert_eq!(m.prefix_cache_hits.get(), 0);
        assert_eq!(m.generation_tokens.get(), u64::from(generated));
        let text = m.encode();
        let value = |prefix: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(value("vllm:request_success_total"), sizes.len() as f64);
        assert_eq!(
            value("vllm:time_to_first_token_seconds_count"),
            sizes.len() as f64
        );
        assert_eq!(
            value("vllm:inter_token_latency_seconds_count"),
            f64::from(generated) - sizes.len() as f64
        );
    }

    #[tokio::test(start_paused = true)]
    async fn loading_an_absent_adapter_costs_time() {
        let config = PodConfig {
            lora_adapters: vec!["a".into(), "b".into()],
            max_loras: 1,
            ..PodConfig::default()
        };
        let pod = Harness::start(config);
        let base = pod.ttft(prompt(0, 64), 1, None).await;
        let load_a = pod.ttft(prompt(1000, 64), 1, Some(0)).await;
        let resident_a = pod.ttft(prompt(2000, 64), 1, Some(0)).await;
        let load_b = pod.ttft(prompt(3000, 64), 1, Some(1)).await;
        let load = Duration::from_millis(50);
        assert!(
            load_a >= base + load && resident_a < base + Duration::from_millis(1),
            "{load_a:?} {resident_a:?} {base:?}"
        );
        assert!(
            load_b >= base + load,
            "b evicted a from the only slot: {load_b:?}"
        );
        assert!(pod.metrics.encode().contains("max_lora=\"1\""));
    }

    #[tokio::test(start_paused = true)]
    async fn lora_info_shows_running_and_waiting_adapters() {
        let config = PodConfig {
            lora_adapters: vec!["a".into(), "b".into()],
            max_loras: 1,
            ..PodConfig::default()
        };
        let pod = Harness::start(config);
        let a = pod.submit(prompt(0, 64), 100, Some(0));
        let b = pod.submit(prompt(1000, 64), 100, Some(1));
        tokio::time::sleep(Duration::from_millis(1)).await;
        let text = pod.metrics.encode();
        assert!(
            text.contains("running_lora_adapters=\"a\",waiting_lora_adapters=\"b\""),
            "{text}"
        );
        a.finished().await;
        b.finished().await;
        let text = pod.metrics.encode();
        assert!(text.contains("running_lora_adapters=\"\",waiting_lora_adapters=\"\""));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_requests_free_their_cache() {
        let pod = Harness::start(small(100));
        let progress = pod.submit(prompt(0, 800), 1000 - 800, None);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(usage(&pod) > 0.4);
        progress.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(usage(&pod), 0.0);
        assert_eq!(pod.metrics.num_requests_running.get(), 0);
    }
}
