#!/usr/bin/env python3
"""Convert public zero-shot benchmarks into latte's task schema (JSONL), Python standard library only.

    python3 scripts/convert_tasks.py FORMAT INPUT [--labels FILE] [-o OUT.jsonl] [--name NAME]

FORMAT is one of: hellaswag, arc, piqa, winogrande, boolq, openbookqa, sciq, lambada.
INPUT is the public file (JSON lines, or one JSON array such as SciQ's test.json; LAMBADA also takes
plain text, one passage per line). Both the original releases' field names and the Hugging Face
`datasets` ones (`ds.to_json(...)`) are read. docs/evaluation.md says where each file comes from.

Output: a header line {"name", "primary", "source"[, "scoring"]} and one item per line
{"context": str, "choices": [str, ...], "label": int, "id": ...}, the prompts being exactly those of
lm-evaluation-harness v0.4 (doc_to_text / doc_to_choice / doc_to_target, target_delimiter " "), so
that `latte eval --tasks` scores what lm-eval scores:

    hellaswag    "<activity_label>: <ctx_a> <Ctx_b>" (lm-eval's preprocess) -> " <ending>"   acc_norm
    arc          "Question: <question>\\nAnswer:" -> " <choice text>"                      acc (easy) / acc_norm (challenge)
    piqa         "Question: <goal>\\nAnswer:" -> " <sol1>" | " <sol2>"                      acc
    winogrande   partial scoring: "<sentence with _>" and the two options                  acc
    boolq        "<passage>\\nQuestion: <question>?\\nAnswer:" -> " no" | " yes"            acc
    openbookqa   "<question_stem>" -> " <choice text>"                                     acc_norm
    sciq         "<support>\\nQuestion: <question>\\nAnswer:" -> 3 distractors + answer     acc
    lambada      all but the last word -> " <last word>" (single choice: greedy acc + ppl) acc

"primary" is the metric the suite's average takes (both acc and acc_norm are always reported).
Problems are reported as "INPUT:LINE: what is wrong" with exit status 2.
"""
import argparse
import json
import os
import re
import sys


class ConvertError(Exception):
    pass


def read_rows(path):
    """Yields (line_number, object) from a JSON-lines file or a file holding one JSON array."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.startswith("\ufeff"):
        text = text[1:]
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConvertError(f"{path}:{e.lineno}: not valid JSON: {e.msg}")
        for i, row in enumerate(rows):
            yield i + 1, row  # element number in the array
        return
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as e:
            raise ConvertError(f"{path}:{number}: not valid JSON: {e.msg}")


def field(row, name, where, kind=None):
    if not isinstance(row, dict):
        raise ConvertError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if name not in row:
        raise ConvertError(f"{where}: missing field '{name}' (fields: {', '.join(sorted(row))})")
    value = row[name]
    if kind is not None and not isinstance(value, kind):
        raise ConvertError(f"{where}: field '{name}' should be {kind.__name__}, got {value!r}")
    return value


def choice_list(row, where):
    """ARC / OpenBookQA choices: AI2's [{"text", "label"}, ...] or HF's {"text": [...], "label": [...]}."""
    question = row.get("question")
    choices = question.get("choices") if isinstance(question, dict) else field(row, "choices", where)
    if isinstance(choices, dict):
        texts, labels = choices.get("text"), choices.get("label")
    elif isinstance(choices, list):
        texts = [c.get("text") for c in choices]
        labels = [c.get("label") for c in choices]
    else:
        raise ConvertError(f"{where}: 'choices' should be a list or a {{text, label}} object, got {choices!r}")
    if not texts or not labels or len(texts) != len(labels) or not all(isinstance(t, str) for t in texts):
        raise ConvertError(f"{where}: malformed choices {choices!r}")
    return texts, [str(l) for l in labels]


def answer_index(labels, key, where):
    key = str(key).strip()
    if key not in labels:
        raise ConvertError(f"{where}: answerKey {key!r} is not one of the choice labels {labels}")
    return labels.index(key)


def as_label(value, where, offset=0):
    """An integer label from an int or a numeric string; unlabelled (test split) rows are an error."""
    if isinstance(value, bool):
        raise ConvertError(f"{where}: label {value!r} is not an index")
    if isinstance(value, int):
        return value - offset
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value) - offset
    raise ConvertError(f"{where}: label {value!r} is missing or not a number (is this the unlabelled test split? "
                       "use the validation split)")


# ---- one converter per benchmark: row -> item ------------------------------------------------------------


def hellaswag_preprocess(text):
    # lm-eval tasks/hellaswag/utils.py (brackets are WikiHow artifacts)
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def convert_hellaswag(row, where, _):
    ctx = field(row, "ctx_a", where, str) + " " + field(row, "ctx_b", where, str).capitalize()
    endings = field(row, "endings", where, list)
    return {
        "context": hellaswag_preprocess(field(row, "activity_label", where, str) + ": " + ctx),
        "choices": [" " + hellaswag_preprocess(e) for e in endings],
        "label": as_label(field(row, "label", where), where),
        "id": row.get("ind", row.get("source_id")),
    }


def convert_arc(row, where, _):
    question = field(row, "question", where)
    stem = question.get("stem") if isinstance(question, dict) else question
    if not isinstance(stem, str):
        raise ConvertError(f"{where}: no question text (expected 'question' or 'question.stem')")
    texts, labels = choice_list(row, where)
    return {
        "context": f"Question: {stem}\nAnswer:",
        "choices": [" " + t for t in texts],
        "label": answer_index(labels, field(row, "answerKey", where), where),
        "id": row.get("id"),
    }


def convert_piqa(row, where, label):
    if label is None:
        label = field(row, "label", where)
    return {
        "context": f"Question: {field(row, 'goal', where, str)}\nAnswer:",
        "choices": [" " + field(row, "sol1", where, str), " " + field(row, "sol2", where, str)],
        "label": as_label(label, where),
        "id": row.get("id"),
    }


def convert_winogrande(row, where, _):
    sentence = field(row, "sentence", where, str)
    if "_" not in sentence:
        raise ConvertError(f"{where}: the sentence has no blank '_': {sentence!r}")
    return {
        "context": sentence,
        "choices": [field(row, "option1", where, str), field(row, "option2", where, str)],
        "label": as_label(field(row, "answer", where), where, offset=1),  # "1" / "2"
        "id": row.get("qID"),
    }


def convert_boolq(row, where, _):
    answer = row["answer"] if "answer" in row else field(row, "label", where)
    if isinstance(answer, str) and answer.lower() in ("true", "false"):
        answer = answer.lower() == "true"
    if not isinstance(answer, (bool, int)) or isinstance(answer, int) and answer not in (0, 1):
        raise ConvertError(f"{where}: answer {answer!r} should be true/false")
    question = field(row, "question", where, str)
    return {
        "context": f"{field(row, 'passage', where, str)}\nQuestion: {question}?\nAnswer:",
        "choices": [" no", " yes"],
        "label": int(bool(answer)),
        "id": row.get("idx"),
    }


def convert_openbookqa(row, where, _):
    question = row.get("question")
    stem = question.get("stem") if isinstance(question, dict) else field(row, "question_stem", where)
    if not isinstance(stem, str):
        raise ConvertError(f"{where}: no question text (expected 'question_stem' or 'question.stem')")
    texts, labels = choice_list(row, where)
    return {
        "context": stem,
        "choices": [" " + t for t in texts],
        "label": answer_index(labels, field(row, "answerKey", where), where),
        "id": row.get("id"),
    }


def convert_sciq(row, where, _):
    support = row.get("support") or ""
    options = [field(row, k, where, str) for k in ("distractor1", "distractor2", "distractor3", "correct_answer")]
    return {
        "context": f"{support.lstrip()}\nQuestion: {field(row, 'question', where, str)}\nAnswer:",
        "choices": [" " + o for o in options],
        "label": 3,
    }


def convert_lambada(row, where, _):
    text = row if isinstance(row, str) else field(row, "text", where, str)
    words = text.split(" ")
    if len(words) < 2 or not words[-1]:
        raise ConvertError(f"{where}: a LAMBADA passage needs at least two space-separated words")
    return {"context": " ".join(words[:-1]), "choices": [" " + words[-1]], "label": 0}


CONVERTERS = {
    # format: (function, default name, primary metric, scoring)
    "hellaswag": (convert_hellaswag, "hellaswag", "acc_norm", None),
    "arc": (convert_arc, "arc", "acc", None),
    "piqa": (convert_piqa, "piqa", "acc", None),
    "winogrande": (convert_winogrande, "winogrande", "acc", "partial"),
    "boolq": (convert_boolq, "boolq", "acc", None),
    "openbookqa": (convert_openbookqa, "openbookqa", "acc_norm", None),
    "sciq": (convert_sciq, "sciq", "acc", None),
    "lambada": (convert_lambada, "lambada_openai", "acc", None),
}


def default_name(fmt, input_path):
    name = CONVERTERS[fmt][1]
    if fmt == "arc":
        base = os.path.basename(input_path).lower()
        name = "arc_challenge" if "challenge" in base else "arc_easy" if "easy" in base else "arc"
    return name


def convert(fmt, input_path, labels_path=None, name=None):
    """Returns the output lines (header first) for one input file."""
    function, _, primary, scoring = CONVERTERS[fmt]
    name = name or default_name(fmt, input_path)
    if fmt == "arc" and name == "arc_challenge":
        primary = "acc_norm"
    labels = None
    if labels_path:
        with open(labels_path, encoding="utf-8") as f:
            labels = [line.strip() for line in f if line.strip()]
    if fmt == "lambada" and not input_path.endswith((".jsonl", ".json")):
        with open(input_path, encoding="utf-8") as f:
            rows = [(n, line.rstrip("\n")) for n, line in enumerate(f, start=1) if line.strip()]
    else:
        rows = list(read_rows(input_path))
    if labels is not None and len(labels) != len(rows):
        raise ConvertError(f"{labels_path}: {len(labels)} labels for {len(rows)} rows of {input_path}")
    header = {"name": name, "primary": primary, "source": os.path.basename(input_path)}
    if scoring:
        header["scoring"] = scoring
    out = [json.dumps(header, ensure_ascii=False)]
    for index, (number, row) in enumerate(rows):
        where = f"{input_path}:{number}"
        item = function(row, where, labels[index] if labels is not None else None)
        if not 0 <= item["label"] < len(item["choices"]):
            raise ConvertError(f"{where}: label {item['label']} is outside the {len(item['choices'])} choices")
        if item.get("id") is None:
            item.pop("id", None)
        out.append(json.dumps(item, ensure_ascii=False))
    if len(out) == 1:
        raise ConvertError(f"{input_path}: no rows")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("format", choices=sorted(CONVERTERS))
    parser.add_argument("input", help="the public file (JSONL or a JSON array; LAMBADA also plain text)")
    parser.add_argument("--labels", help="PIQA: the labels file (valid-labels.lst), one 0/1 per line")
    parser.add_argument("-o", "--output", help="output .jsonl (default: stdout)")
    parser.add_argument("--name", help="task name (default: the benchmark's lm-eval name)")
    args = parser.parse_args(argv)
    try:
        lines = convert(args.format, args.input, args.labels, args.name)
    except ConvertError as e:
        print(f"convert_tasks.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"convert_tasks.py: error: {e}", file=sys.stderr)
        return 2
    text = "\n".join(lines) + "\n"
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        tmp = args.output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.output)
        print(f"{args.output}: {len(lines) - 1} items ({args.format})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
