// What the `latte <command>` implementations share: reading arguments, parsing numbers, printing sizes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace latte::apps {

// Walks the arguments of `latte <command> ...` (argv[0] is the command) one option at a time:
//   for (ArgCursor args(argc, argv, kUsage); args.next();) {
//     if (args.is_help()) ...; else if (args.arg() == "--out") out = args.value(); ...
// Errors name the option and end with the usage text (main() puts "latte <command>: error:" before them).
class ArgCursor {
 public:
  ArgCursor(int argc, char** argv, std::string usage = "");
  bool next();                              // moves to the next argument; false past the last
  const std::string& arg() const { return arg_; }
  bool is_help() const { return arg_ == "--help" || arg_ == "-h"; }
  std::string value();                      // consumes the argument after arg(); an error when there is none
  void values(std::vector<std::string>& out);  // consumes every following argument up to the next "--option" (>= 1)

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
  std::string arg_, usage_;
};

// `text` as a whole integer / real number, else an error "<option> expects ..., got '<text>'".
int64_t parse_int(const std::string& option, const std::string& text);
double parse_real(const std::string& option, const std::string& text);

// "27.00 GiB", "320.00 KiB", "12 B" (powers of 1024).
std::string human_bytes(double bytes);

}  // namespace latte::apps
