// Every config key path the parsers asked for in this process ("train.steps", "model.attention.kv_rank"),
// so a test can check that docs/configuration.md documents each key the code accepts. The YAML readers
// (train/yaml_reader.h, the model section's reader in layers/model_config.cpp) record into it.
#pragma once
#include <set>
#include <string>

namespace latte {

void note_config_key(const std::string& path);
std::set<std::string> config_keys_noted();
void forget_config_keys();  // starts the record afresh (a test that parses only what it checks)

}  // namespace latte
