#include "train/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "core/log.h"
#include "data/loader.h"
#include "distributed/process_group.h"
#include "distributed/topology.h"
#include "kernels/attention_backend.h"
#include "kernels/op_profiler.h"
#include "layers/safetensors.h"
#include "layers/transformer.h"
#include "train/checkpoint_store.h"
#include "train/distill.h"
#include "train/metrics.h"
#include "train/optimizer_setup.h"
#include "train/perplexity_suite.h"
#include "train/run_setup.h"
#include "train/schedule.h"
#ifdef LATTE_WITH_CUDA
#include "kernels/cuda/matmul.h"
#endif

namespace fs = std::filesystem;

namespace latte {

namespace {

std::atomic<bool> g_stop_requested{false};
void on_signal(int) { g_stop_requested.store(true); }

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// (B, T) int32 host buffer -> tensor on `device`.
Tensor batch_tensor(const int32_t* data, int64_t b, int64_t t, Device device) {
  Tensor host = Tensor::empty({b, t}, DType::I32);
  std::memcpy(host.data_ptr(), data, static_cast<size_t>(b * t) * sizeof(int32_t));
  return device.is_cpu() ? host : host.to(device);
}

// Mean validation loss over up to `max_batches` batches of a fresh sequential pass.
// Each DP rank evaluates its share of the windows; the mean is averaged over DP ranks.
double evaluate(TransformerLM& model, const ExperimentConfig& cfg, const RunSetup& run, int64_t max_batches) {
  const Device device = run.device;
  data::LoaderConfig lc;
  lc.dp_rank = run.dp_rank;
  lc.dp_size = cfg.parallel.dp;
  lc.shard_patterns = cfg.data.val;
  lc.seq_len = cfg.train.seq_len;
  lc.batch_size = cfg.train.micro_batch;
  lc.shuffle = false;
  lc.single_pass = true;
  lc.vocab_size = static_cast<int32_t>(cfg.model.vocab_size);
  data::DataLoader loader(lc);
  autograd::NoGradGuard no_grad;
  double total = 0;
  int64_t n = 0;
  while (n < max_batches || max_batches <= 0) {
    const data::Batch* batch = loader.next();
    if (!batch) break;
    Tensor ids = batch_tensor(batch->inputs, batch->batch_size, batch->seq_len, device);
    Tensor targets = batch_tensor(batch->targets, batch->batch_size, batch->seq_len, device);
    total += model.loss(ids, targets).item();
    ++n;
  }
  LATTE_REQUIRE(n > 0, "validation data ", cfg.data.val.empty() ? std::string("(none)") : cfg.data.val[0],
                " holds no full window of seq_len + 1 = ", cfg.train.seq_len + 1, " tokens");
  const double mean = total / static_cast<double>(n);
  return run.dp_group() ? run.dp_group()->all_reduce_scalar(mean, dist::ReduceOp::Avg) : mean;
}

}  // namespace

void install_stop_signal_handlers() {
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
}

void request_stop() { g_stop_requested.store(true); }

TrainResult train(const ExperimentConfig& cfg, const TrainOptions& options) {
  g_stop_requested.store(false);
  RunSetup run = setup_run(cfg, options.local_only);
  set_attention_backend(parse_attention_backend(cfg.train.attention_backend, cfg.source + ": train.attention_backend"));
  const TrainConfig& tc = cfg.train;
  const Device device = run.device;
  if (run.is_logging_rank) {
    fs::create_directories(tc.out_dir);
    write_file_atomic((fs::path(tc.out_dir) / "config.yaml").string(), YAML::Dump(cfg.resolved) + "\n");
  }

  // ---- model and optimizer --------------------------------------------------------------------------
  // Tensor parallelism: each TP rank holds its shard of every split parameter (same seed everywhere).
  dist::ProcessGroup* tp_group = run.topology && cfg.parallel.tp > 1 ? run.topology->tp_group().get() : nullptr;
  TransformerLM model(cfg.model, tc.seed, run.dtype, device, TensorParallelContext::of(tp_group));
  // Before AdamW copies its fp32 masters; a resume below overwrites these weights from the checkpoint.
  if (!tc.init_from.empty()) init_from_weights(model, tc.init_from);
  std::unique_ptr<Distiller> distiller;  // the teacher (no grad, same device and dtype), when train.distill is set
  if (tc.distill.enabled()) distiller = std::make_unique<Distiller>(tc.distill, cfg.model, device, run.dtype);
  // AdamW with the gradient reductions it needs: DP averaging, TP sums, ZeRO-1 sharding (optimizer_setup.h).
  TrainOptimizer optimizer(model, cfg, run);
  LrSchedule schedule{tc.schedule, tc.lr, tc.min_lr_ratio, tc.warmup_steps, tc.steps, tc.wsd_decay_fraction};

  // ---- data -----------------------------------------------------------------------------------------
  LATTE_REQUIRE(!cfg.data.train.empty(), cfg.source, ": data.train is empty; give shard globs such as data/kjv/*_train_*.bin "
                                         "(scripts/prepare_data.sh makes them)");
  data::LoaderConfig lc;
  lc.shard_patterns = cfg.data.train;
  lc.seq_len = tc.seq_len;
  lc.batch_size = tc.micro_batch;
  lc.dp_rank = run.dp_rank;
  lc.dp_size = cfg.parallel.dp;
  lc.seed = tc.seed;
  lc.vocab_size = static_cast<int32_t>(cfg.model.vocab_size);

  // ---- resume ---------------------------------------------------------------------------------------
  CheckpointStore store(cfg.checkpoint.dir, cfg.checkpoint.keep_last);
  int64_t start_step = 0, tokens_seen = 0;
  // The NaN/spike guard's state travels in checkpoints too, so that a resumed run skips the same steps.
  int64_t bad_in_a_row = 0;
  double loss_ema = -1;  // running mean of accepted losses; < 0 until the first accepted step
  data::LoaderState loader_state{0, 0, tc.seed, 0};
  std::optional<std::string> resume_dir;
  if (options.resume == "auto") {
    resume_dir = store.latest_valid();
    if (!resume_dir) log::info("resume auto: no usable checkpoint in ", store.dir(), ", starting fresh");
  } else if (!options.resume.empty()) {
    const std::string problem = CheckpointStore::verify(options.resume);
    LATTE_REQUIRE(problem.empty(), options.resume, ": cannot resume from this checkpoint: ", problem);
    resume_dir = options.resume;
  } else {
    LATTE_REQUIRE(store.list_complete().empty(), cfg.checkpoint.dir, " already holds checkpoints; pass --resume auto to "
                                                 "continue that run, or choose another train.out_dir");
  }
  if (resume_dir) {
    nlohmann::json state = nlohmann::json::parse(read_file((fs::path(*resume_dir) / "state.json").string()));
    optimizer.check_resume(state, *resume_dir);  // first: a ZeRO-1 dp mismatch gets the ZeRO-1 message
    check_world_shape(state, cfg, *resume_dir);
    load_state(model, (fs::path(*resume_dir) / rank_file("model", run)).string());
    start_step = state.at("step").get<int64_t>();
    tokens_seen = state.at("tokens_seen").get<int64_t>();
    optimizer.load_state(*resume_dir, state.at("optimizer_step").get<int64_t>());
    loader_state = state.at("loader").get<data::LoaderState>();
    if (state.contains("guard")) {  // absent in checkpoints written before the guard state was saved
      loss_ema = state.at("guard").at("loss_ema").get<double>();
      bad_in_a_row = state.at("guard").at("bad_in_a_row").get<int64_t>();
    }
    log::info("resumed from ", *resume_dir, " at step ", start_step);
  }
  data::DataLoader loader(lc, loader_state);

  // ---- evaluation suite (eval.sets, eval.tasks) ------------------------------------------------------
  // Built before the first step: task files are parsed and set globs expanded now, so that a typo stops
  // the run here instead of at the first evaluation hours later. Every rank runs the whole suite on its
  // (identical) replica; only the logging rank writes the metrics.
  EvalSuiteConfig suite_config;
  for (const auto& [name, globs] : cfg.eval.sets) suite_config.sets.push_back({name, globs});
  suite_config.perplexity = {tc.seq_len, tc.micro_batch, cfg.eval.batches};
  suite_config.task_files = cfg.eval.tasks;
  suite_config.zero_shot.batch_rows = cfg.eval.task_batch > 0 ? cfg.eval.task_batch : tc.micro_batch;
  suite_config.zero_shot.limit = cfg.eval.task_limit;
  suite_config.tokenizer = cfg.data.tokenizer;
  suite_config.tokenizer_dir = cfg.data.tokenizer_dir;
  const EvalSuite suite(suite_config);
  LATTE_REQUIRE(suite.empty() || !tp_group, cfg.source, ": eval.sets / eval.tasks score with the full LM head and "
                                            "need parallel.tp = 1 for now; use data.val for validation under TP");

  // Rank 0 makes the staging directory; the first DP replica of each TP rank writes the model shard
  // (the replicas hold identical weights, with ZeRO-1 too after its all-gather), every rank its
  // optimizer state (the full state, or its ZeRO-1 shard); rank 0 writes state.json and commits once
  // everyone is done.
  auto save_checkpoint = [&](int64_t step) {
    const std::string staging = run.is_logging_rank ? store.begin(step) : store.step_dir(step) + ".partial";
    run.barrier();
    if (run.dp_rank == 0)
      save_state(model, (fs::path(staging) / rank_file("model", run)).string(), model.tp_layout_metadata());
    optimizer.save_state(staging);
    run.barrier();
    if (!run.is_logging_rank) {
      run.barrier();
      return;
    }
    nlohmann::json state = {{"step", step},
                            {"tokens_seen", tokens_seen},
                            {"optimizer_step", optimizer.steps_taken()},
                            {"loader", loader.state()},
                            {"guard", {{"loss_ema", loss_ema}, {"bad_in_a_row", bad_in_a_row}}},
                            {"seed", tc.seed},
                            {"world", {{"dp", cfg.parallel.dp}, {"tp", cfg.parallel.tp}}},
                            {"config", YAML::Dump(cfg.resolved)}};
    optimizer.record_in(state);  // zero1: how the optimizer files are sharded (checked on resume)
    write_file_atomic((fs::path(staging) / "state.json").string(), state.dump(2));
    write_file_atomic((fs::path(staging) / "config.yaml").string(), YAML::Dump(cfg.resolved) + "\n");
    store.commit(step, staging);
    log::info("saved checkpoint ", store.step_dir(step));
    run.barrier();
  };

  // ---- loop -----------------------------------------------------------------------------------------
  MetricsLog metrics(tc.out_dir, start_step, run.is_logging_rank);
  run.barrier();  // every rank has read the checkpoint state before anyone writes
  const int64_t accum = cfg.grad_accum_steps();
  const int64_t tokens_per_step = cfg.tokens_per_micro_batch() * accum * cfg.parallel.dp;
  const double flops = flops_per_token(cfg.model, tc.seq_len);
  const int64_t end_step = tc.stop_after > 0 ? std::min(tc.steps, start_step + tc.stop_after) : tc.steps;
  if (!options.quiet)
    log::info("training ", model_summary(model, cfg), " on ", device.str(), " (", dtype_name(run.dtype), "), steps ",
              start_step, " -> ", end_step, " of ", tc.steps, ", ", tokens_per_step, " tokens/step (", accum,
              " micro-batches of ", tc.micro_batch, "x", tc.seq_len, ")");
  // OpenBLAS's threads spin for ~2^28 cycles after every GEMM (the library reads OPENBLAS_THREAD_TIMEOUT when
  // it loads, so the process cannot change it), holding the cores the CPU kernels' own threads need between
  // GEMMs: the quickstart model trains ~25% faster with a short timeout (docs/training_performance.md).
  if (!options.quiet && device.is_cpu() && std::getenv("OPENBLAS_THREAD_TIMEOUT") == nullptr)
    log::info("hint: OPENBLAS_THREAD_TIMEOUT=4 in the environment lets the CPU kernels' threads use the cores "
              "between GEMMs (scripts/quickstart.sh sets it)");

  TrainResult result;
  const auto t_start = Clock::now();
  int64_t step = start_step;
  for (; step < end_step; ++step) {
    const auto t0 = Clock::now();
    optimizer.zero_grad();
    // The micro-batches' losses stay on the device until the step's end: one host read per step instead of one
    // per micro-batch, so the host keeps queueing the next micro-batch while the device runs this one.
    Tensor micro_losses;  // (accum), the loss's dtype and device
    for (int64_t micro = 0; micro < accum; ++micro) {
      optimizer.begin_micro_batch(micro == accum - 1);  // DP reduction once per optimizer step
      const data::Batch* batch = loader.next();
      Tensor ids = batch_tensor(batch->inputs, batch->batch_size, batch->seq_len, device);
      Tensor targets = batch_tensor(batch->targets, batch->batch_size, batch->seq_len, device);
      Tensor loss = distiller ? distiller->loss(model, ids, targets).loss : model.loss(ids, targets);
      scale(loss, 1.0 / static_cast<double>(accum)).backward();
      if (!micro_losses.defined()) micro_losses = Tensor::empty({accum}, loss.dtype(), loss.device());
      micro_losses.narrow(0, micro, 1).copy_(loss.detach().reshape({1}));
    }
    double loss_sum = 0;
    {
      ops::WaitScope wait;  // LATTE_PROFILE_OPS=1: the host blocks here until the step's backward is done
      for (double l : micro_losses.to_vector()) loss_sum += l;  // in micro-batch order, as before
    }
    optimizer.reduce_gradients();  // averaged over DP, replicated parameters summed over TP
    double loss = loss_sum / static_cast<double>(accum);
    const auto [distill_kl, distill_ce] = distiller ? distiller->take_stats() : std::pair<double, double>{-1.0, -1.0};
    if (run.dp_group()) loss = run.dp_group()->all_reduce_scalar(loss, dist::ReduceOp::Avg);
    const double grad_norm = [&] {
      ops::WaitScope wait;
      return optimizer.grad_norm();
    }();
    const double lr = schedule.at(step);

    // NaN/spike guard: skip the update, and give up after max_bad_steps in a row.
    const bool spike = tc.spike_factor > 0 && loss_ema > 0 && loss > tc.spike_factor * loss_ema;
    if (!std::isfinite(loss) || !std::isfinite(grad_norm) || spike) {
      ++bad_in_a_row;
      log::warn("step ", step + 1, ": skipped the update (loss ", loss, ", grad norm ", grad_norm, spike ? ", spike" : "",
                "), ", bad_in_a_row, " in a row");
      LATTE_REQUIRE(bad_in_a_row < tc.max_bad_steps, "stopping: ", bad_in_a_row,
                    " bad steps in a row (train.max_bad_steps); lower train.lr or check the data");
      tokens_seen += tokens_per_step;
      continue;
    }
    bad_in_a_row = 0;
    loss_ema = loss_ema < 0 ? loss : 0.95 * loss_ema + 0.05 * loss;
    const double clip = tc.grad_clip > 0 && grad_norm > tc.grad_clip ? tc.grad_clip / grad_norm : 1.0;
    optimizer.step(lr, clip);  // with ZeRO-1 also all-gathers the updated weights
    tokens_seen += tokens_per_step;
    if (ops::op_profiling()) ops::op_profile_collect(step - start_step >= 3);  // LATTE_PROFILE_OPS=1

    const double dt = seconds_since(t0);
    const double tokens_per_s = static_cast<double>(tokens_per_step) / dt;
    const double mfu = device.is_cuda() ? model_flops_utilization(flops, tokens_per_s, run.world_size) : 0.0;
    nlohmann::json row = {{"step", step + 1}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                          {"tokens_per_s", tokens_per_s}, {"mfu", mfu}, {"tokens", tokens_seen}};
    if (distiller) {  // this rank's mean KL (before tau^2) and student CE over the step's micro-batches
      row["kl"] = distill_kl;
      row["ce"] = distill_ce;
    }
    result.last_loss = loss;

    const bool last = step + 1 == end_step;
    const bool eval_now = (!cfg.data.val.empty() || !suite.empty()) &&
                          ((cfg.eval.every > 0 && (step + 1) % cfg.eval.every == 0) || (step + 1 == tc.steps));
    if (eval_now && !suite.empty()) {
      const EvalReport report = suite.run(model);
      add_metrics(report, row);  // val/<set>_loss, val/<set>_ppl, val/avg_*, task/<name>_acc, task/avg, ...
      if (!options.quiet) log::info("step ", step + 1, ": ", summary_line(report));
    }
    if (eval_now && !cfg.data.val.empty()) {
      const double val = evaluate(model, cfg, run, cfg.eval.batches);
      row["val_loss"] = val;
      row["val_ppl"] = std::exp(val);
      result.last_val_loss = val;
      if (!options.quiet) log::info("step ", step + 1, ": val loss ", val, ", ppl ", std::exp(val));
    }
    metrics.write(row);
    if (!options.quiet && ((step + 1) % cfg.log.every == 0 || last)) {
      const double elapsed = seconds_since(t_start);
      const double eta = elapsed / static_cast<double>(step + 1 - start_step) * static_cast<double>(end_step - step - 1);
      char line[320];
      std::snprintf(line, sizeof(line),
                    "step %6lld/%lld | loss %.4f | lr %.2e | grad %.3f | %.0f tok/s | mfu %.1f%% | mem %s | eta %s",
                    static_cast<long long>(step + 1), static_cast<long long>(tc.steps), loss, lr, grad_norm,
                    tokens_per_s, 100 * mfu, memory_summary(device).c_str(), format_duration(eta).c_str());
      log::info(line);
    }
    bool stop_now = g_stop_requested.load();
    if (run.world_group())  // every rank stops at the same step when any one was signalled
      stop_now = run.world_group()->all_reduce_scalar(stop_now ? 1.0 : 0.0, dist::ReduceOp::Max) > 0;
    const bool finished = step + 1 == tc.steps;  // not an invocation cut short by --stop-after
    const bool periodic = cfg.checkpoint.every > 0 && (step + 1) % cfg.checkpoint.every == 0;
    if (periodic || (last && (!finished || cfg.checkpoint.at_end)) || stop_now) save_checkpoint(step + 1);
    if (stop_now) {
      log::info("stop requested: saved at step ", step + 1, ", exiting");
      ++step;
      result.interrupted = true;
      break;
    }
  }
  if (step < tc.steps) result.interrupted = true;
  result.last_step = step;
#ifdef LATTE_WITH_CUDA
  if (device.is_cuda() && !options.quiet) {  // what the GEMMs' first-call autotuning chose (kernels/cuda/matmul.cu)
    const cuda::MatmulTuningStats t = cuda::matmul_tuning_stats();
    if (t.plans_timed > 0)
      log::info("GEMM autotuning: ", t.plans_timed, " shapes timed, ", t.plans_switched,
                " run another algorithm than cuBLASLt's first choice (one call of each: ", t.first_ms, " -> ",
                t.chosen_ms, " ms)");
  }
#endif
  if (const std::string profile = ops::op_profile_report(); !profile.empty()) log::info(profile);
  return result;
}

}  // namespace latte
