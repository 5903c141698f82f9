// Every `latte <command>` entry point. Each lives in apps/cmd_<name>.cpp and returns the exit code;
// latte::Error thrown from one is printed by main() as "latte <command>: error: <message>".
#pragma once

namespace latte::apps {

int cmd_version(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_export(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_kv_report(int argc, char** argv);
int cmd_decode_bench(int argc, char** argv);
int cmd_dump(int argc, char** argv);
int cmd_import_hf(int argc, char** argv);
int cmd_upcycle(int argc, char** argv);
int cmd_sweep(int argc, char** argv);

}  // namespace latte::apps
