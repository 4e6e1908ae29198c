// SPDX-License-Identifier: GPL-3.0-or-later
#include "options.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "retnet/error.h"
#include "retnet/memory_limit.h"

namespace retnet::cli {

namespace {
std::string number(double x) {  // 1e-09, 0.95, 100: what the user would type
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", x);
    return buf;
}

// Every option as "NAME TYPE   meaning (default: X)": CLI11's own layout puts the default after
// the type ("INT=128"), which reads as part of the syntax.
class Formatter : public CLI::Formatter {
public:
    Formatter() { column_width(34); }
    std::string make_description(const CLI::App* app) const override {
        return CLI::Formatter::make_description(app) + "\n";
    }
    std::string make_option_opts(const CLI::Option* opt) const override {
        if (opt->get_type_size() == 0) return "";
        return " " + opt->get_type_name() + (opt->get_required() ? " (required)" : "");
    }
    // CLI11 ends each group of options with a blank line and begins the next with another: one is enough.
    std::string make_help(const CLI::App* app, std::string name, CLI::AppFormatMode mode) const override {
        std::string text = CLI::Formatter::make_help(app, std::move(name), mode);
        for (size_t at; (at = text.find("\n\n\n")) != std::string::npos;) text.erase(at, 1);
        return text;
    }
    std::string make_option_desc(const CLI::Option* opt) const override {
        const std::string& fallback = opt->get_default_str();
        const bool shown = !fallback.empty() && !opt->get_required();
        return opt->get_description() + (shown ? " (default: " + fallback + ")" : "");
    }
};

// The unknown word and the option names it might be a misspelling of.
[[noreturn]] void unknown_argument(const CLI::App& app, const std::string& word) {
    if (word == "--") throw Error("'--' ends the options, but no command takes other words after them");
    if (word.size() < 2 || word[0] != '-')
        throw Error("unexpected argument '" + word + "' (options look like --name value)");
    std::string name = word.substr(0, word.find('='));
    name.erase(0, name.find_first_not_of('-'));
    std::vector<std::string> names;
    for (const CLI::Option* opt : app.get_options())
        for (const std::string& l : opt->get_lnames()) names.push_back(l);
    const std::string near = closest_match(name, names);
    throw Error("unknown option " + word.substr(0, word.find('=')) +
                (near.empty() ? "" : " (did you mean --" + near + "?)"));
}
}  // namespace

void add_max_memory(CLI::App& app) {
    app.add_option_function<std::string>(
           "--max-memory",
           [](const std::string& size) { set_memory_limit(parse_bytes(size, "option --max-memory")); },
           "refuse work that would allocate more than SIZE, e.g. 8G or 512M (K, M, G, T: powers of 1024; default: the machine's memory, never above ulimit -v)")
        ->type_name("SIZE");
}

std::unique_ptr<CLI::App> make_app(const std::string& name, const std::string& description) {
    auto app = std::make_unique<CLI::App>(description, "retnet " + name);
    app->formatter(std::make_shared<Formatter>());
    app->set_help_flag("-h,--help", "print this help (every option, its default and meaning) and exit");
    app->allow_extras();  // parse() names them, with a suggestion
    add_max_memory(*app);
    app->footer("Every error is one line on stderr and a non-zero exit status.");
    return app;
}

namespace {
// The required options of an app and of its subcommands, made optional for CLI11's parse: it checks
// them before the words it does not know, so `retnet eval --bogus` said "--model is required".
// parse() checks them itself after naming an unknown word.
std::vector<std::pair<const CLI::App*, CLI::Option*>> take_requirements(CLI::App& app) {
    std::vector<std::pair<const CLI::App*, CLI::Option*>> taken;
    for (CLI::Option* opt : app.get_options())
        if (opt->get_required()) {
            opt->required(false);
            taken.emplace_back(&app, opt);
        }
    for (CLI::App* sub : app.get_subcommands({})) {
        const auto own = take_requirements(*sub);
        taken.insert(taken.end(), own.begin(), own.end());
    }
    return taken;
}

// CLI11 gives an option that takes a value the next word even when that word is another option, and
// `--x=` (nothing after '=') the word after it: `init --out --seed=5` wrote a model into ./--seed=5
// with the default seed. Here a value option followed by an option's word is refused, and `--x=` is
// the empty value it spells. Help asked for anywhere is given (below).
std::vector<std::string> guard_option_values(CLI::App& app, const std::vector<std::string>& argv) {
    std::vector<CLI::App*> apps{&app};
    for (CLI::App* sub : app.get_subcommands({})) apps.push_back(sub);
    // the value option named `name` ("--x" or "-x"), or null
    const auto value_option = [&apps](const std::string& name) -> const CLI::Option* {
        for (CLI::App* a : apps)
            if (const CLI::Option* opt = a->get_option_no_throw(name))
                return opt->get_expected_min() > 0 && opt->get_type_size_min() > 0 ? opt : nullptr;
        return nullptr;
    };
    const auto any_option = [&apps](const std::string& name) {
        return std::any_of(apps.begin(), apps.end(), [&](CLI::App* a) { return a->get_option_no_throw(name) != nullptr; });
    };
    // --name, or -x with a letter (-1 is a value)
    const auto option_word = [](const std::string& w) {
        const bool letter = w.size() == 2 && ((w[1] >= 'a' && w[1] <= 'z') || (w[1] >= 'A' && w[1] <= 'Z'));
        return (w.size() > 2 && w.rfind("--", 0) == 0) || (w[0] == '-' && letter);
    };
    // -h or --help anywhere wins over every other word (CLI11 could take it as a value, or stop at a
    // bad value first): the command's help, or its action's.
    const auto end = std::find(argv.begin(), argv.end(), std::string("--"));
    if (std::find_if(argv.begin(), end, [](const std::string& w) { return w == "-h" || w == "--help"; }) != end) {
        std::vector<std::string> words;
        for (auto w = argv.begin(); w != end; ++w)
            if (std::any_of(apps.begin() + 1, apps.end(), [&](const CLI::App* a) { return a->get_name() == *w; }))
                words.push_back(*w);
        words.emplace_back("--help");
        return words;
    }
    std::vector<std::string> words;
    for (size_t i = 0; i < argv.size(); ++i) {
        const std::string& w = argv[i];
        if (w == "--") {  // the rest is CLI11's to refuse (no command takes positional words)
            words.insert(words.end(), argv.begin() + static_cast<std::ptrdiff_t>(i), argv.end());
            break;
        }
        const size_t eq = w.find('=');
        const std::string name = w.substr(0, eq);
        // -model is -m with the value "odel" to CLI11; a word that is a long option's name with one
        // dash was meant as that option.
        if (w.size() > 2 && w[0] == '-' && w[1] != '-' && name.size() > 2 && any_option("--" + name.substr(1)))
            throw Error("unknown option " + name + " (long options take two dashes: -" + name + ")");
        const CLI::Option* opt = !name.empty() && option_word(name) ? value_option(name) : nullptr;
        if (opt && name.size() == 2 && eq == 2) {  // -p=hi: the value is "hi", not "=hi"
            words.push_back(name);
            words.push_back(w.substr(3));
            continue;
        }
        if (opt) {
            if (eq + 1 == w.size()) {
                words.push_back(name);
                words.emplace_back();
                continue;
            }
            if (eq == std::string::npos && i + 1 < argv.size() && option_word(argv[i + 1])) {
                const std::string spelled = opt->get_lnames().empty() ? name : "--" + opt->get_lnames().front();
                throw Error("option " + name + " needs a value (one that starts with '-' goes as " + spelled + "=VALUE)");
            }
            if (eq == std::string::npos && i + 1 < argv.size()) {  // its value is not looked at (--prompt -model)
                words.push_back(w);
                words.push_back(argv[++i]);
                continue;
            }
        }
        words.push_back(w);
    }
    return words;
}
}  // namespace

void parse(CLI::App& app, const std::vector<std::string>& argv_in) {
    const std::vector<std::string> argv = guard_option_values(app, argv_in);
    std::vector<std::string> reversed(argv.rbegin(), argv.rend());  // CLI11 takes them last first
    const auto requirements = take_requirements(app);
    // The words nobody took: the subcommand given (retnet tokenizer train) names them, with its
    // options to suggest; what it did not take may have fallen through to the command itself.
    const auto name_unknown_words = [&app] {
        std::vector<std::string> left = app.remaining();
        const CLI::App* chosen = &app;
        while (!chosen->get_subcommands().empty()) {
            chosen = chosen->get_subcommands().front();
            const std::vector<std::string> own = chosen->remaining();
            left.insert(left.begin(), own.begin(), own.end());
        }
        if (!left.empty()) unknown_argument(*chosen, left.front());
    };
    try {
        app.parse(reversed);
    } catch (const CLI::CallForHelp&) {
        for (const auto& [owner, opt] : requirements) opt->required(true);  // the help marks them "(required)"
        // All: a command with actions (tokenizer) lists each action's options too.
        // CLI11 indents the blank line between a subcommand's description and its options: no
        // trailing whitespace on any line
        std::istringstream lines(app.help("", CLI::AppFormatMode::All));
        for (std::string line; std::getline(lines, line);) {
            line.erase(line.find_last_not_of(" \t") + 1);
            std::fputs((line + "\n").c_str(), stdout);
        }
        throw HelpShown{};
    } catch (const CLI::ArgumentMismatch& e) {
        name_unknown_words();
        // CLI11 says "--x: At Most 1 required but received 2" or "--x: 1 required TEXT missing".
        const std::string what = e.what(), name = what.substr(0, what.find(':'));
        if (what.find("At Most") != std::string::npos) throw Error("option " + name + " is given more than once");
        throw Error("option " + name + " needs a value (one that starts with '-' goes as " + name + "=VALUE)");
    } catch (const CLI::RequiredError& e) {
        name_unknown_words();
        if (app.get_require_subcommand_min() > 0 && app.get_subcommands().empty()) {
            std::string actions;
            for (const CLI::App* sub : app.get_subcommands({})) actions += (actions.empty() ? "" : "|") + sub->get_name();
            throw Error("missing action: " + app.get_name() + " " + actions + " [options] (" + app.get_name() + " --help)");
        }
        throw Error(e.what());
    } catch (const CLI::ParseError& e) {
        name_unknown_words();
        throw Error(e.what());
    } catch (const Error&) {
        // A value refused by an option's own check (--seed abc): all words were read by then, so
        // an unknown one is named first, as for every other error.
        name_unknown_words();
        throw;
    }
    name_unknown_words();
    for (const auto& [owner, opt] : requirements)
        if ((owner == &app || owner->parsed()) && opt->count() == 0) throw Error(opt->get_name() + " is required");
}

std::string option_name(const std::string& names) {
    const size_t at = names.rfind("--");
    return at == std::string::npos ? names : names.substr(at, names.find(',', at) - at);
}

int64_t parse_int(const std::string& what, const std::string& text, int64_t min, int64_t max) {
    int64_t out = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    if (ec == std::errc::result_out_of_range && end == text.data() + text.size())
        throw Error(what + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " + text);
    if (ec != std::errc() || end != text.data() + text.size())
        throw Error(what + " expects an integer, got '" + text + "'");
    if (out < min || out > max)
        throw Error(what + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " + text);
    return out;
}

double parse_number(const std::string& what, const std::string& text, double min, double max) {
    double out = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    if (ec != std::errc() || end != text.data() + text.size())
        throw Error(what + " expects a number, got '" + text + "'");
    if (!std::isfinite(out) || out < min || out > max)
        throw Error(what + " must be in [" + number(min) + ", " + number(max) + "], got " + text);
    return out;
}

CLI::Option* add_int(CLI::App& app, const std::string& names, int64_t& value, int64_t min, int64_t max,
                     const std::string& help) {
    const std::string what = "option " + option_name(names);
    return app
        .add_option_function<std::string>(
            names, [&value, what, min, max](const std::string& text) { value = parse_int(what, text, min, max); }, help)
        ->type_name("N")
        ->default_str(std::to_string(value));
}

CLI::Option* add_int(CLI::App& app, const std::string& names, int& value, int64_t min, int64_t max,
                     const std::string& help) {
    const std::string what = "option " + option_name(names);
    return app
        .add_option_function<std::string>(
            names,
            [&value, what, min, max](const std::string& text) { value = static_cast<int>(parse_int(what, text, min, max)); },
            help)
        ->type_name("N")
        ->default_str(std::to_string(value));
}

CLI::Option* add_number(CLI::App& app, const std::string& names, double& value, double min, double max,
                        const std::string& help) {
    const std::string what = "option " + option_name(names);
    return app
        .add_option_function<std::string>(
            names, [&value, what, min, max](const std::string& text) { value = parse_number(what, text, min, max); },
            help)
        ->type_name("X")
        ->default_str(number(value));
}

CLI::Option* add_text(CLI::App& app, const std::string& names, std::string& value, const std::string& help) {
    return app.add_option(names, value, help)->type_name("TEXT")->default_str(value);
}

CLI::Option* add_out_directory(CLI::App& app, std::string& value, const std::string& help) {
    return add_text(app, "--out", value, help)
        ->type_name("DIR")
        ->required()
        ->check(
            [](const std::string& v) -> std::string {
                return v == "-" ? "'-' is standard output, not a directory; name one, e.g. --out NAME" : "";
            },
            "", "");
}

CLI::Option* add_flag(CLI::App& app, const std::string& names, bool& value, const std::string& help) {
    const std::string what = option_name(names);
    // CLI11 stores the text after '=' ("true" for the flag alone) here; each() reads it as a real
    // boolean. (A flag bound to a bool would take "2" as on, and an integer flag aborts on "maybe".)
    auto text = std::make_shared<std::string>();
    return app.add_flag(names, *text, help)->multi_option_policy(CLI::MultiOptionPolicy::Throw)->each([&value, what, text](const std::string& given) {
        std::string word = given;  // TRUE and Off as well
        for (char& ch : word) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        for (const char* yes : {"true", "1", "yes", "on"})
            if (word == yes) return void(value = true);
        for (const char* no : {"false", "0", "no", "off"})
            if (word == no) return void(value = false);
        throw Error("option " + what + " is a flag: give it alone, or =true / =false, not '" + given + "'");
    });
}

std::string closest_match(const std::string& typed, const std::vector<std::string>& candidates) {
    // Case is not a spelling difference: --PROMPT is --prompt.
    const auto lower = [](std::string s) {
        for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        return s;
    };
    const std::string word = lower(typed);
    std::string best;
    size_t best_distance = 3;
    for (const std::string& candidate : candidates) {
        const std::string c = lower(candidate);
        // Levenshtein distance, one row at a time.
        std::vector<size_t> row(c.size() + 1);
        for (size_t j = 0; j <= c.size(); ++j) row[j] = j;
        for (size_t i = 1; i <= word.size(); ++i) {
            size_t diagonal = row[0];
            row[0] = i;
            for (size_t j = 1; j <= c.size(); ++j) {
                const size_t up = row[j];
                row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (word[i - 1] == c[j - 1] ? 0 : 1)});
                diagonal = up;
            }
        }
        const bool prefix = word.size() >= 3 && c.rfind(word, 0) == 0;
        const size_t distance = prefix ? 1 : row[c.size()];
        if (distance < best_distance) {
            best_distance = distance;
            best = candidate;
        }
    }
    return best;
}

std::vector<int32_t> parse_token_list(const std::string& text) {
    std::vector<int32_t> out;
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t comma = text.find(',', pos);
        if (comma == std::string::npos) comma = text.size();
        std::string item = text.substr(pos, comma - pos);
        int32_t id = 0;
        auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
        if (ec == std::errc::result_out_of_range && end == item.data() + item.size())
            throw Error("bad token list '" + text + "': '" + item + "' is outside the vocabulary (beyond the range of a token id)");
        if (item.empty() || ec != std::errc() || end != item.data() + item.size())
            throw Error("bad token list '" + text + "': '" + item + "' is not an integer id");
        out.push_back(id);
        pos = comma + 1;
    }
    return out;
}

}  // namespace retnet::cli
