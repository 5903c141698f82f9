// The `latte` command-line tool: dispatches to apps/cmd_*.cpp and turns latte::Error into a clear
// message and a non-zero exit code.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "apps/commands.h"
#include "core/error.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

const Command kCommands[] = {
    {"train", latte::apps::cmd_train, "train a model from a YAML experiment config (resumable)"},
    {"sweep", latte::apps::cmd_sweep, "run a grid or list of training runs from a sweep file (skips finished, resumes interrupted)"},
    {"eval", latte::apps::cmd_eval, "validation perplexity (--data/--sets) and zero-shot accuracy (--tasks) of a checkpoint"},
    {"generate", latte::apps::cmd_generate, "sample text from a checkpoint with the KV cache"},
    {"kv-report", latte::apps::cmd_kv_report, "KV-cache size, parameters and FLOPs of a model config"},
    {"decode-bench", latte::apps::cmd_decode_bench, "per-token decode latency and per-device KV bytes at long contexts (TP under mpirun)"},
    {"tokenize", latte::apps::cmd_tokenize, "GPT-2 BPE / byte tokenization: stdin ids, or corpora into shards"},
    {"export", latte::apps::cmd_export, "merge a checkpoint into one safetensors file with its config"},
    {"dump", latte::apps::cmd_dump, "write logits and one step's gradients (PyTorch parity checks)"},
    {"import-hf", latte::apps::cmd_import_hf, "convert a Hugging Face Llama checkpoint into a latte model directory"},
    {"upcycle", latte::apps::cmd_upcycle, "MHA/GQA -> MLA by SVD initialisation (X-EcoMLA), ready to distill"},
    {"version", latte::apps::cmd_version, "print the version and the backends this build has"},
};

void print_help() {
  std::printf(
      "latte: pretrain LMs with KV-cache-efficient attention (MHA/GQA, MLA, EG-MLA, MLRA)\n\n"
      "usage: latte <command> [options]    (latte <command> --help for its options)\n\ncommands:\n");
  for (const Command& c : kCommands) std::printf("  %-12s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    print_help();
    return argc < 2 ? 1 : 0;
  }
  const std::string name = argv[1];
  for (const Command& c : kCommands) {
    if (name != c.name) continue;
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const latte::Error& e) {
      std::fprintf(stderr, "latte %s: error: %s\n", c.name, e.what());
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "latte %s: internal error: %s\n", c.name, e.what());
      return 3;
    }
  }
  std::fprintf(stderr, "latte: unknown command '%s'\n\n", name.c_str());
  print_help();
  return 1;
}
