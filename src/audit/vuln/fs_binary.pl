# fsfleet audit_fs_binary: `freeswitch -version` of the binary FreeSWITCH runs, run unprivileged.
#
# Run as root (`perl -e PROGRAM -- PROC PID INSTALLED...`, see src/audit/vuln/facts.rs): PROC is
# the proc tree (/proc), PID systemd's MainPID of freeswitch (empty or 0: none), INSTALLED the
# binaries tried when no process runs. One process instead of a shell chain of ~17 (each start
# costs the host about 1 ms of CPU); perl-base only (Essential on Debian and Ubuntu), and no
# module at all: loading POSIX alone costs more CPU (9 ms) than the chain did (15 ms).
#
# Everything below is host text and treated as such: paths are never given to a shell, the
# binary runs through a list-form exec, every line printed is one line (a path with a line
# break is refused before it is printed). Output lines: `replaced PATH...`, `unsafe ...`,
# `none`, `binary running|started|installed PATH`, then up to three `said LINE`.
use strict;

my ($proc, $pid, @installed) = @ARGV;
$proc = '/proc' unless defined $proc && $proc ne '';

sub done { print "$_[0]\n"; exit 0; }

# A path with a line break would print as two lines, the second of the path owner's choosing.
sub oneline { done('unsafe (a path with a line break): not run') if $_[0] =~ /\n/; }

sub slurp {
    my ($path) = @_;
    open(my $fh, '<', $path) or return undef;
    local $/;
    my $text = <$fh>;
    close $fh;
    return $text;
}

# As the shell's `case $p in ''|0|*[!0-9]*)`: no process.
sub no_pid { my ($p) = @_; return !defined $p || $p eq '' || $p eq '0' || $p =~ /[^0-9]/; }

# `readlink -f` of an absolute path, '' where it fails: every symbolic link followed (at most
# 40), `.` and `..` taken after the links before them, all but the last component must exist
# and be directories (a trailing slash on an existing file fails too).
sub resolved {
    my ($path) = @_;
    my @todo = grep { $_ ne '' } split m{/}, $path;
    my @done;
    my $links = 0;
    while (@todo) {
        my $c = shift @todo;
        next if $c eq '.';
        if ($c eq '..') { pop @done; next; }
        my $p = join('/', '', @done, $c);
        my $target = readlink($p);
        if (defined $target) {
            return '' if ++$links > 40 || $target eq '';
            @done = () if $target =~ m{\A/};
            unshift @todo, grep { $_ ne '' } split m{/}, $target;
            next;
        }
        return '' if @todo && !-d $p;
        push @done, $c;
    }
    my $r = join('/', '', @done) || '/';
    return '' if $path =~ m{/\z} && -e $r && !-d $r;
    return $r;
}

# The kernel's clock ticks per second (what sysconf(_SC_CLK_TCK) reads): AT_CLKTCK (17) of this
# process's auxiliary vector, native-word (type, value) pairs.
sub clock_ticks {
    my $auxv = slurp('/proc/self/auxv');
    return undef unless defined $auxv;
    my %aux = unpack('L!*', $auxv);
    return $aux{17};
}

# `pidof -s freeswitch` as sysvinit's pidof matches a bare name: argv[0] is `freeswitch` or
# ends in `/freeswitch`, or (argv[0] empty or holding a space: a process that rewrote its
# title) the kernel's name is; of several, the highest PID, as pidof -s prints.
sub pidof_freeswitch {
    opendir(my $dh, $proc) or return '';
    my $best = '';
    for my $p (readdir $dh) {
        next unless $p =~ /\A[0-9]+\z/ && $p != $$;
        my $cmdline = slurp("$proc/$p/cmdline");
        next unless defined $cmdline;
        my ($argv0) = split /\0/, $cmdline, 2;
        $argv0 = '' unless defined $argv0;
        my $ok = $argv0 eq 'freeswitch' || $argv0 =~ m{/freeswitch\z};
        if (!$ok && ($argv0 eq '' || $argv0 =~ / /)) {
            my $stat = slurp("$proc/$p/stat");
            $ok = defined $stat && $stat =~ /\A[0-9]+ \((.*)\) /s && $1 eq 'freeswitch';
        }
        $best = $p if $ok && ($best eq '' || $p > $best);
    }
    closedir $dh;
    return $best;
}

# When the process started, in seconds since the epoch: btime of PROC/stat plus field 22 of
# PROC/PID/stat in clock ticks. undef when any part is unreadable.
sub start_time {
    my ($p) = @_;
    my $sys = slurp("$proc/stat");
    return undef unless defined $sys && $sys =~ /^btime ([0-9]+)$/m && $1 > 0;
    my $btime = $1;
    my $hz = clock_ticks();
    return undef unless defined $hz && $hz > 0;
    my $stat = slurp("$proc/$p/stat");
    return undef unless defined $stat;
    # The name in parentheses is the process's choice (any bytes, even ") " or a line break):
    # the fields start after the last ") ".
    $stat =~ s/\A.*\) //s or return undef;
    my $start = (split ' ', $stat)[19];
    return undef unless defined $start && $start =~ /\A[0-9]+\z/;
    return int($btime + $start / $hz);
}

$pid = pidof_freeswitch() if no_pid($pid);
my ($e, $how) = ('', 'installed');
if (!no_pid($pid)) {
    my $exe = readlink("$proc/$pid/exe");
    if (defined $exe && $exe ne '') {
        ($e, $how) = ($exe, 'running');
    } else {
        # Root may not read exe (no CAP_SYS_PTRACE, as in a container): argv[0], if absolute
        # and not changed since the process started.
        $how = 'started';
        my $cmdline = slurp("$proc/$pid/cmdline");
        my ($argv0) = defined $cmdline ? split(/\0/, $cmdline, 2) : ();
        $argv0 = '' unless defined $argv0;
        if ($argv0 =~ m{\A/}) {
            oneline($argv0);
            $e = resolved($argv0);
        }
        oneline($e);
        if ($e ne '') {
            my $t = start_time($pid);
            my @m = lstat($e);
            if (!defined $t || !@m || $m[9] > $t) {
                print "replaced $e (changed after the process started, or its start time is unreadable)\n";
                $e = '';
            }
        }
    }
}
oneline($e);
if ($e =~ / \(deleted\)\z/) {
    print "replaced $e\n";
    $e = '';
}
if ($e eq '') {
    $how = 'installed';
    for my $c (@installed) {
        if (-f $c) { $e = resolved($c); last; }
    }
}
oneline($e);
done('none') if $e eq '';
done("unsafe $e: not an absolute path to a freeswitch binary") unless $e =~ m{\A/.*/freeswitch\z}s;

# It and every directory above it (lstat: a link on the way shows as mode 777) must be root's
# and writable by no one else, else whoever can write one could run code as fsfleet's child.
my @walk = ($e);
for (my $d = $e; $d ne '/';) {
    $d =~ s{/[^/]*\z}{};
    $d = '/' if $d eq '';
    push @walk, $d;
}
my $unreadable = 0;
for my $f (@walk) {
    my @s = lstat($f);
    if (!@s) { $unreadable = 1; next; }
    done("unsafe $f: not owned by root") if $s[4] != 0;
    done(sprintf('unsafe %s: writable by group or others (mode %o)', $f, $s[2] & 07777)) if $s[2] & 022;
}
done("unsafe $e: a directory above it cannot be read") if $unreadable;

# setpriv from PATH, as `command -v`, absolute entries only (a relative one would be the
# current directory's).
my ($setpriv) = grep { -f $_ && -x _ } map { "$_/setpriv" } grep { m{\A/} } split /:/, ($ENV{PATH} // '');
done("unsafe $e: setpriv is missing, so it cannot be run unprivileged") unless defined $setpriv;
print "binary $how $e\n";

# As nobody with no new privileges, from /, stdin /dev/null, stderr merged; at most 5 s, then
# killed with what it started; only the first 300 bytes are read. One fork: the child execs
# setpriv, which execs the binary (same process, same group).
pipe(my $r, my $w) or exit 0;
my $child = fork;
exit 0 unless defined $child;
if ($child == 0) {
    close $r;
    # (fork flushed the output the child shares, so exit prints nothing twice)
    setpgrp(0, 0);
    chdir('/') or exit 127;
    open(STDIN, '<', '/dev/null') or exit 127;
    open(STDOUT, '>&', $w) or exit 127;
    open(STDERR, '>&', $w) or exit 127;
    close $w;
    exec { $setpriv } 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--no-new-privs',
        '--', $e, '-version';
    exit 127;
}
close $w;
setpgrp($child, $child);
# At the deadline: kill it and its group (what it started). Only here and in the waitpid below
# is it reaped, so while waitpid(WNOHANG) says it runs, its PID and group are its own; reaped
# just now, its group's number stays reserved while a member lives. The signal also ends a
# read that a process outside the group keeps open.
$SIG{ALRM} = sub {
    my $st = waitpid($child, 1);    # WNOHANG
    kill 'KILL', -$child if $st == 0 || $st == $child;
    kill 'KILL', $child if $st == 0;
};
alarm 5;
my $out = '';
while (length($out) < 300) {
    my $n = sysread($r, $out, 300 - length($out), length($out));
    last unless $n;
}
# Past the cut it gets SIGPIPE when it writes on, as `head -c 300` gave it.
close $r;
waitpid($child, 0);
alarm 0;
my $lines = 0;
for my $line ($out =~ /[^\n]*\n|[^\n]+\z/g) {
    last if $lines++ == 3;
    $line =~ s/\n\z//;
    print "said $line\n";
}
exit 0;
