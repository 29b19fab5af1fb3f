"""Run in a child process with sd-scripts on sys.path: parse a `medsynth generate` command and prompt file with
accelerate's and sdxl_gen_img.py's OWN code, and print what they made of them as one JSON line.

sdxl_gen_img.py parses prompt-file lines inline in main() (sdxl_gen_img.py:2438-2700), not in a function, so the
block that does it is taken out of main() with `ast` and run as is: the same statements, not a copy.
Input (stdin, JSON): {"argv": [python, "-m", "accelerate.commands.launch", ...], "script": path}.
"""

import ast
import inspect
import json
import sys
import textwrap


def prompt_parser(module):
    """main()'s per-prompt parsing block (defaults from args, split on " --", the option regexes) as a function."""
    tree = ast.parse(inspect.getsource(module))
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    loop = next(n for n in ast.walk(main)
                if isinstance(n, ast.For) and isinstance(n.target, ast.Name) and n.target.id == "parg")
    block = next(n for n in ast.walk(main) if isinstance(n, ast.If) and loop in n.body)
    body = "\n".join(ast.unparse(statement) for statement in block.body)
    source = ("def parse_line(raw_prompt, args, prompt_index=0, prompt_list=()):\n" + textwrap.indent(body, "    ")
              + "\n    return {'prompt': prompt, 'width': width, 'height': height, 'steps': steps, 'scale': scale,"
                " 'seeds': seeds, 'negative_prompt': negative_prompt}\n")
    namespace = dict(vars(module))
    exec(compile(source, module.__file__, "exec"), namespace)
    return namespace["parse_line"]


def main():
    request = json.loads(sys.stdin.read())
    argv = request["argv"]
    from accelerate.commands.launch import launch_command_parser

    launched = launch_command_parser().parse_args(argv[3:])
    import sdxl_gen_img

    args = sdxl_gen_img.setup_parser().parse_args(launched.training_script_args)
    with open(args.from_file, "r", encoding="utf-8") as f:  # as main() reads it (sdxl_gen_img.py:1923-1925)
        lines = [d for d in f.read().splitlines() if len(d.strip()) > 0 and d[0] != "#"]
    parse_line = prompt_parser(sdxl_gen_img)
    prompts = []
    for line in lines:
        variants = sdxl_gen_img.handle_dynamic_prompt_variants(line, args.images_per_prompt)
        prompts.append({**parse_line(variants[0], args), "variants": len(variants)})
    print("GEN_PROBE " + json.dumps({
        "launch": {"script": launched.training_script, "cpu": launched.cpu, "num_processes": launched.num_processes},
        "args": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))},
        "prompts": prompts}))


if __name__ == "__main__":
    main()
