#include "py_json.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace tpem::detail {
namespace {

void append_escaped(const std::string &s, std::string &out) {
    out += '"';
    size_t i = 0;
    auto hex4 = [&](unsigned v) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "\\u%04x", v);
        out += buf;
    };
    while (i < s.size()) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            switch (c) {
                case '"': out += "\\\""; break;
                case '\\': out += "\\\\"; break;
                case '\n': out += "\\n"; break;
                case '\r': out += "\\r"; break;
                case '\t': out += "\\t"; break;
                case '\b': out += "\\b"; break;
                case '\f': out += "\\f"; break;
                default:
                    if (c < 0x20 || c == 0x7f) hex4(c);
                    else out += static_cast<char>(c);
            }
            ++i;
            continue;
        }
        // nlohmann::json only holds valid UTF-8, so the sequence is well formed
        int extra = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
        unsigned cp = c & (0x3f >> extra);
        for (int k = 1; k <= extra && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
        i += extra + 1;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            hex4(0xd800 + (cp >> 10));
            hex4(0xdc00 + (cp & 0x3ff));
        } else {
            hex4(cp);
        }
    }
    out += '"';
}

void dump(const nlohmann::json &j, std::string &out) {
    using T = nlohmann::json::value_t;
    switch (j.type()) {
        case T::null: out += "null"; break;
        case T::boolean: out += j.get<bool>() ? "true" : "false"; break;
        case T::number_integer: out += std::to_string(j.get<int64_t>()); break;
        case T::number_unsigned: out += std::to_string(j.get<uint64_t>()); break;
        case T::number_float: out += python_float_repr(j.get<double>()); break;
        case T::string: append_escaped(j.get_ref<const std::string &>(), out); break;
        case T::array: {
            out += '[';
            bool first = true;
            for (const auto &item : j) {
                if (!first) out += ',';
                first = false;
                dump(item, out);
            }
            out += ']';
            break;
        }
        case T::object: {  // std::map keeps keys in UTF-8 byte order, which is code point order
            out += '{';
            bool first = true;
            for (auto it = j.begin(); it != j.end(); ++it) {
                if (!first) out += ',';
                first = false;
                append_escaped(it.key(), out);
                out += ':';
                dump(it.value(), out);
            }
            out += '}';
            break;
        }
        default: out += "null";
    }
}

}  // namespace

std::string python_float_repr(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
    if (v == 0.0) return std::signbit(v) ? "-0.0" : "0.0";
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
    std::string sci(buf, res.ptr);  // [-]d[.ddd]e[+-]XX, shortest round-trip digits
    std::string sign;
    if (sci[0] == '-') {
        sign = "-";
        sci.erase(0, 1);
    }
    size_t e = sci.find('e');
    std::string digits;
    for (size_t k = 0; k < e; ++k)
        if (sci[k] != '.') digits += sci[k];
    int exponent = std::atoi(sci.c_str() + e + 1);
    int decpt = exponent + 1;  // digits d1 d2 ... mean 0.d1d2... * 10^decpt
    int n = static_cast<int>(digits.size());
    std::string out = sign;
    if (decpt <= -4 || decpt > 16) {
        out += digits.substr(0, 1);
        if (n > 1) out += "." + digits.substr(1);
        char ebuf[16];
        std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
        out += ebuf;
    } else if (decpt <= 0) {
        out += "0." + std::string(-decpt, '0') + digits;
    } else if (decpt >= n) {
        out += digits + std::string(decpt - n, '0') + ".0";
    } else {
        out += digits.substr(0, decpt) + "." + digits.substr(decpt);
    }
    return out;
}

std::string python_canonical_json(const nlohmann::json &value) {
    std::string out;
    dump(value, out);
    return out;
}

}  // namespace tpem::detail
