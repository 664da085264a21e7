# fsfleet hostfs: root's file operations on a host whose other users may be hostile.
#
# Run as root (`perl -e PROGRAM`); the operations arrive on stdin (see src/hostfs.rs for the
# format). Uses only perl-base, which Debian and Ubuntu always have (Essential: yes).
#
# Why it is safe against a local user who owns a directory on the way (the `freeswitch` user
# owns FreeSWITCH's config and log trees):
# - A directory is entered one component at a time with chdir; after each chdir, stat(".")
#   must be the inode lstat saw, so a component swapped for a link or another directory
#   between the two is detected. From then on every operation uses a name relative to the
#   directory we hold (the kernel resolves it against that inode, not against a path a user
#   can rename), and the directories are kept open and re-entered with fchdir.
# - A symbolic link on the way is followed only when the directory holding it is owned by
#   root and writable by nobody else (only root could have put it there).
# - Files are created with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, under a fresh random name;
#   mode and owner are set on the open descriptor (fchmod, fchown), content is fsync'ed,
#   then rename() puts it in place. A target that is a link, a directory or anything but a
#   regular file is refused, never followed.
# - All writes of one batch are staged first; only when every stage is complete are they
#   renamed, with hangups ignored: the targets are all old or all new.
use strict;
use warnings;
use Fcntl qw(O_WRONLY O_CREAT O_EXCL O_NOFOLLOW :mode);
use IO::Handle ();

$| = 1;
my $MAXLINKS = 16;

sub fail { my ($code, $msg) = @_; print STDERR "$msg\n"; exit $code; }

sub trusted_dir {    # the directory we are in: only root can add or replace its entries
    my @s = stat(".") or return 0;
    return $s[4] == 0 && !($s[2] & 022);
}

# chdir into the directory at absolute $path; returns an open handle on it.
sub enter {
    my ($path) = @_;
    my @todo = split m{/+}, $path;
    die "$path: not an absolute path\n" unless $path =~ m{^/};
    chdir("/") or die "/: $!\n";
    my $links = 0;
    while (@todo) {
        my $c = shift @todo;
        next if $c eq '' || $c eq '.';
        if ($c eq '..') {
            # Only reached through a link target that root wrote (see below).
            chdir("..") or die "$path: ..: $!\n";
            next;
        }
        my @l = lstat($c) or die "$path: $c: $!\n";
        if (S_ISLNK($l[2])) {
            trusted_dir() or die "$path: $c is a symbolic link in a directory that a user other than root can change; fsfleet does not follow it\n";
            ++$links <= $MAXLINKS or die "$path: too many symbolic links\n";
            my $t = readlink($c);
            defined $t or die "$path: $c: $!\n";
            chdir("/") or die "/: $!\n" if $t =~ m{^/};
            unshift @todo, split(m{/+}, $t);
            next;
        }
        S_ISDIR($l[2]) or die "$path: $c is not a directory\n";
        chdir($c) or die "$path: $c: $!\n";
        my @s = stat(".") or die "$path: $c: $!\n";
        ($s[0] == $l[0] && $s[1] == $l[1]) or die "$path: $c changed while fsfleet was entering it\n";
    }
    opendir(my $dh, ".") or die "$path: $!\n";
    return $dh;
}

sub split_path {
    my ($p) = @_;
    $p =~ m{^(/.*?)/*([^/]+)$} or die "$p: not a file path\n";
    my ($d, $b) = ($1 eq '' ? '/' : $1, $2);
    die "$p: not a file path\n" if $b eq '.' || $b eq '..';
    return ($d, $b);
}

sub ids {
    my ($user, $group) = @_;
    my $uid = $user =~ /^[0-9]+$/ ? $user : (getpwnam($user))[2];
    my $gid = $group =~ /^[0-9]+$/ ? $group : (getgrnam($group))[2];
    defined $uid or die "no such user $user\n";
    defined $gid or die "no such group $group\n";
    return ($uid, $gid);
}

sub readn {
    my ($n) = @_;
    my $buf = '';
    while (length($buf) < $n) {
        my $r = read(STDIN, $buf, $n - length($buf), length($buf));
        defined $r or fail(2, "reading input: $!");
        $r or fail(2, "input ended early; nothing was changed");
    }
    return $buf;
}

binmode STDIN;
my $magic = <STDIN>;
defined $magic && $magic eq "fsfleet-hostfs 1\n" or fail(2, "bad input header; nothing was changed");
my @ops;
my $ended = 0;
while (defined(my $line = <STDIN>)) {
    chomp $line;
    if ($line eq '.') { $ended = 1; last; }
    my @f = split /\t/, $line, -1;
    if ($f[0] eq 'W' && @f == 7) {
        my %op = (kind => 'W', path => $f[1], user => $f[2], group => $f[3], mode => oct($f[4]), token => $f[6]);
        $f[5] =~ /^[0-9]+$/ or fail(2, "bad length; nothing was changed");
        $op{data} = readn($f[5]);
        push @ops, \%op;
    } elsif ($f[0] eq 'C' && @f == 4) {
        push @ops, { kind => 'C', path => $f[1], mode => oct($f[2]), owners => [split /,/, $f[3]] };
    } elsif ($f[0] eq 'D' && @f == 2) {
        push @ops, { kind => 'D', path => $f[1] };
    } else {
        fail(2, "bad operation line; nothing was changed");
    }
}
$ended or fail(2, "input ended early; nothing was changed");

# Phase 1: check every target, stage every write. Nothing visible changes yet.
my $err;
for my $op (@ops) {
    eval {
        my ($d, $b) = split_path($op->{path});
        $op->{dir} = enter($d);
        $op->{base} = $b;
        my @t = lstat($b);
        if (@t && !S_ISREG($t[2])) {
            die "$op->{path} is " . (S_ISLNK($t[2]) ? "a symbolic link" : S_ISDIR($t[2]) ? "a directory" : "not a regular file")
              . "; fsfleet does not write through it: replace it with the file itself, then re-run\n"
              unless $op->{kind} eq 'D' && S_ISLNK($t[2]);
        }
        if ($op->{kind} eq 'C') {
            # The file will belong to its directory's owner: only one fsfleet was told to expect.
            my @d = stat(".") or die "$d: $!\n";
            my %ok;
            for my $o (@{ $op->{owners} }) {
                my $u = $o =~ /^[0-9]+$/ ? $o : (getpwnam($o))[2];
                $ok{$u} = 1 if defined $u;
            }
            $ok{ $d[4] } or die "$d is owned by uid $d[4], not by " . join(' or ', @{ $op->{owners} }) . "; fsfleet will not create files in it\n";
        }
        if ($op->{kind} eq 'W') {
            my ($uid, $gid) = ids($op->{user}, $op->{group});
            my $stage = "$b.fsfleet-stage-$op->{token}";
            sysopen(my $fh, $stage, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600) or die "$op->{path}: creating the stage file: $!\n";
            $op->{stage} = $stage;
            my @st = stat($fh);
            $op->{ino} = [$st[0], $st[1]];
            binmode $fh;
            my $off = 0;
            while ($off < length $op->{data}) {
                my $w = syswrite($fh, $op->{data}, length($op->{data}) - $off, $off);
                defined $w or die "$op->{path}: writing: $!\n";
                $off += $w;
            }
            $fh->sync or die "$op->{path}: fsync: $!\n";
            chmod($op->{mode}, $fh) or die "$op->{path}: fchmod: $!\n";
            chown($uid, $gid, $fh) or die "$op->{path}: fchown: $!\n";
            close($fh) or die "$op->{path}: $!\n";
        }
        1;
    } or do { $err = $@; last; };
}
if (defined $err) {
    for my $op (@ops) {
        next unless $op->{stage};
        chdir($op->{dir}) or next;
        my @s = lstat($op->{stage});
        unlink($op->{stage}) if @s && $s[0] == $op->{ino}[0] && $s[1] == $op->{ino}[1];
    }
    chomp $err;
    fail(3, "$err; nothing was changed");
}

# Every stage must still be the file written above (a user who can write the directory may
# have replaced it): if one is not, none is installed.
for my $op (@ops) {
    next unless $op->{stage};
    chdir($op->{dir}) or last;
    my @s = lstat($op->{stage});
    next if @s && $s[0] == $op->{ino}[0] && $s[1] == $op->{ino}[1];
    $err = "$op->{path}: the stage file was replaced by someone else";
    last;
}
if (defined $err) {
    for my $op (@ops) {
        next unless $op->{stage} && chdir($op->{dir});
        my @s = lstat($op->{stage});
        unlink($op->{stage}) if @s && (S_ISLNK($s[2]) || ($s[0] == $op->{ino}[0] && $s[1] == $op->{ino}[1]));
    }
    fail(3, "$err; nothing was changed");
}

# Phase 2: put everything in place; a hangup now must not stop half way.
$SIG{$_} = 'IGNORE' for qw(HUP PIPE INT TERM);
my $bad = 0;
for my $op (@ops) {
    my $p = $op->{path};
    if (!chdir($op->{dir})) { print STDERR "$p: $!\n"; $bad = 1; next; }
    if ($op->{kind} eq 'W') {
        my @s = lstat($op->{stage});
        unless (@s && $s[0] == $op->{ino}[0] && $s[1] == $op->{ino}[1]) {
            print STDERR "$p: the stage file was replaced by someone else; not installed\n";
            unlink($op->{stage}) if @s && S_ISLNK($s[2]);
            $bad = 1;
            next;
        }
        if (rename($op->{stage}, $op->{base})) { print "written $p\n"; }
        else { print STDERR "$p: rename: $!\n"; $bad = 1; }
    } elsif ($op->{kind} eq 'C') {
        if (sysopen(my $fh, $op->{base}, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600)) {
            my @d = stat(".");
            chmod($op->{mode}, $fh) && chown($d[4], $d[5], $fh) or do { print STDERR "$p: $!\n"; $bad = 1; };
            close($fh);
            print "created $p\n";
        } else {
            my @t = lstat($op->{base});
            if (@t && S_ISREG($t[2])) { print "exists $p\n"; }
            else { print STDERR "$p: cannot create: $!\n"; $bad = 1; }
        }
    } else {
        if (unlink($op->{base})) { print "removed $p\n"; }
        elsif (!lstat($op->{base})) { print "absent $p\n"; }
        else { print STDERR "$p: $!\n"; $bad = 1; }
    }
}
exit($bad ? 4 : 0);
