// `pgrunbook completion bash|zsh|fish`: shell completion made from the command registry and the
// procedures' ParamSpecs: commands, procedure names after --procedure, each command's and each
// procedure's options, the values of choice options, and file or directory names where an
// option takes one.
import { loadProcedures } from '../procedures/load.js';
import { COMPLETION, CliUsageError, GLOBAL, SUBCOMMANDS, checkPositionals, commandHelp, parseCommand, procedureOptions, type OptionDecl } from './registry.js';

const SHELLS = ['bash', 'zsh', 'fish'];

function flagsOf(options: OptionDecl[]): string[] {
  return options.flatMap((o) => [`--${o.name}`, ...(o.negatable ? [`--no-${o.name}`] : [])]);
}

function valueCases(options: OptionDecl[], indent: string): string {
  const lines: string[] = [];
  for (const o of options) {
    if (o.type === 'boolean') continue;
    const pats = [`--${o.name}`, ...(o.short ? [`-${o.short}`] : [])].join('|');
    const action = o.choices
      ? `COMPREPLY=($(compgen -W "${o.choices.join(' ')}" -- "$cur"))`
      : o.completes === 'dir'
        ? 'COMPREPLY=($(compgen -d -- "$cur"))'
        : o.completes === 'file'
          ? 'COMPREPLY=($(compgen -f -- "$cur"))'
          : 'COMPREPLY=()';
    lines.push(`${indent}${pats}) ${action}; return 0;;`);
  }
  return lines.join('\n');
}

export function bashCompletion(procedures: { id: string; params: import('../engine/types.js').ParamSpec[] }[]): string {
  const globals = flagsOf(GLOBAL.options);
  const subs = Object.keys(SUBCOMMANDS);
  const procCases = procedures
    .map((p) => {
      const opts = procedureOptions(p.params);
      return `    ${p.id})
      opts="$opts ${flagsOf(opts).join(' ')}"
      case "$prev" in
${valueCases(opts, '        ')}
      esac;;`;
    })
    .join('\n');
  const subCases = Object.values(SUBCOMMANDS)
    .map(
      (d) => `    ${d.name})
      case "$prev" in
${valueCases(d.options, '        ')}
      esac
      opts="${flagsOf(d.options).join(' ')}"${d.name === 'profile' ? '\n      [[ $COMP_CWORD -eq 2 ]] && opts="save list show delete"' : d.name === 'completion' ? `\n      opts="${SHELLS.join(' ')}"` : ''};;`,
    )
    .join('\n');
  return `# pgrunbook bash completion: source <(pgrunbook completion bash)
_pgrunbook() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="" opts="" proc="" i
  [[ $COMP_CWORD -gt 0 ]] && prev="\${COMP_WORDS[COMP_CWORD-1]}"
  local procs="${procedures.map((p) => p.id).join(' ')}"
  local first="\${COMP_WORDS[1]}"
  if [[ $COMP_CWORD -eq 1 && "$cur" != -* ]]; then
    COMPREPLY=($(compgen -W "${subs.join(' ')}" -- "$cur"))
    return 0
  fi
  case "$first" in
${subCases}
    *)
      for ((i = 1; i < COMP_CWORD; i++)); do
        case "\${COMP_WORDS[i]}" in
          --procedure|-P) proc="\${COMP_WORDS[i+1]}";;
          --procedure=*) proc="\${COMP_WORDS[i]#--procedure=}";;
        esac
      done
      case "$prev" in
        --procedure|-P) COMPREPLY=($(compgen -W "$procs" -- "$cur")); return 0;;
${valueCases(GLOBAL.options.filter((o) => o.name !== 'procedure'), '        ')}
      esac
      opts="${globals.join(' ')}"
      case "$proc" in
${procCases}
      esac;;
  esac
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  return 0
}
complete -F _pgrunbook pgrunbook
`;
}

function fishCompletion(procedures: { id: string; summary: string; params: import('../engine/types.js').ParamSpec[] }[]): string {
  const q = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  const lines = ['# pgrunbook fish completion: pgrunbook completion fish | source', 'complete -c pgrunbook -f'];
  const subs = Object.keys(SUBCOMMANDS);
  for (const d of Object.values(SUBCOMMANDS)) lines.push(`complete -c pgrunbook -n '__fish_use_subcommand' -a ${d.name} -d ${q(d.summary)}`);
  const line = (cond: string, o: OptionDecl) =>
    `complete -c pgrunbook -n ${q(cond)} -l ${o.name}${o.short ? ` -s ${o.short}` : ''}${o.type === 'boolean' ? '' : ' -r'}${o.choices ? ` -a ${q(o.choices.join(' '))}` : ''} -d ${q(o.help.slice(0, 80))}`;
  for (const o of GLOBAL.options) lines.push(line(`not __fish_seen_subcommand_from ${subs.join(' ')}`, o));
  lines.push(`complete -c pgrunbook -n '__fish_seen_argument -l procedure -s P' -a ${q(procedures.map((p) => p.id).join(' '))}`);
  for (const d of Object.values(SUBCOMMANDS)) for (const o of d.options) lines.push(line(`__fish_seen_subcommand_from ${d.name}`, o));
  for (const p of procedures) for (const o of procedureOptions(p.params)) lines.push(line(`__fish_contains_opt procedure; and string match -q -- ${p.id} (commandline -opc)`, o));
  return `${lines.join('\n')}\n`;
}

export async function completionCommand(argv: string[], io: { stdout: NodeJS.WritableStream; env: NodeJS.ProcessEnv }): Promise<number> {
  const { flags, positionals } = parseCommand(COMPLETION, argv);
  if (flags.help) {
    io.stdout.write(commandHelp(COMPLETION));
    return 0;
  }
  checkPositionals(COMPLETION, positionals);
  const shell = positionals[0];
  if (!SHELLS.includes(shell)) throw new CliUsageError(`no completion for the shell "${shell}"; valid: ${SHELLS.join(', ')}`, 'e.g. source <(pgrunbook completion bash)');
  const procedures = await loadProcedures(io.env);
  if (shell === 'bash') io.stdout.write(bashCompletion(procedures));
  // zsh runs the bash function through its bash-completion emulation.
  else if (shell === 'zsh') io.stdout.write(`# pgrunbook zsh completion: source <(pgrunbook completion zsh)\nautoload -U +X bashcompinit && bashcompinit\n${bashCompletion(procedures)}`);
  else io.stdout.write(fishCompletion(procedures));
  return 0;
}
