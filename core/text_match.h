// "Did you mean ...?" for user-facing errors: the closest known word by edit distance.
#pragma once
#include <string>
#include <vector>

namespace latte {

size_t edit_distance(const std::string& a, const std::string& b);  // Levenshtein
// Closest candidate, or "" when none is within max(2, word.size() / 3) edits.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace latte
