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
#   owner and mode are set on the open descriptor (fchown, then fchmod), content is fsync'ed,
#   then rename() puts it in place. A target that is a link, a directory or anything but a
#   regular file is refused, never followed.
# - All writes of one batch are staged first; only when every stage is complete are they
#   renamed, with hangups ignored: the targets are all old or all new.
use strict;
use warnings;
use Fcntl qw(O_WRONLY O_CREAT O_EXCL O_NOFOLLOW :mode);
use IO::Handle ();
use POSIX ();

$| = 1;
my $MAXLINKS = 16;

sub fail { my ($code, $msg) = @_; print STDERR "$msg\n"; exit $code; }

# Whether only root can replace or move the entry whose lstat is @$l in the directory we are
# in: the directory is root's and writable by nobody else, or it is root's and sticky (/tmp)
# and the entry is root's too.
sub fixed_entry {
    my ($l) = @_;
    my @s = stat(".") or return 0;
    return 0 unless $s[4] == 0;
    return 1 unless $s[2] & 022;
    return ($s[2] & 01000) && $l->[4] == 0;
}

# chdir into the directory at absolute $path; returns an open handle on it.
sub enter {
    my ($path) = @_;
    my @todo = split m{/+}, $path;
    die "$path: not an absolute path\n" unless $path =~ m{^/};
    die "$path: a . or .. component\n" if grep { $_ eq '.' || $_ eq '..' } @todo;
    chdir("/") or die "/: $!\n";
    my $links = 0;
    # Whether no directory entered since "/" can have been moved by a user other than root:
    # only then is the kernel's ".." the parent the path named.
    my $fixed = 1;
    while (@todo) {
        my $c = shift @todo;
        next if $c eq '' || $c eq '.';
        if ($c eq '..') {
            # Only reached through a link target that root wrote (see below).
            $fixed or die "$path: a link's target climbs out of a directory that a user other than root can change; fsfleet does not follow it\n";
            chdir("..") or die "$path: ..: $!\n";
            next;
        }
        my @l = lstat($c) or die "$path: $c: $!\n";
        if (S_ISLNK($l[2])) {
            fixed_entry(\@l) or die "$path: $c is a symbolic link in a directory that a user other than root can change; fsfleet does not follow it\n";
            ++$links <= $MAXLINKS or die "$path: too many symbolic links\n";
            my $t = readlink($c);
            defined $t or die "$path: $c: $!\n";
            if ($t =~ m{^/}) { chdir("/") or die "/: $!\n"; $fixed = 1; }
            unshift @todo, split(m{/+}, $t);
            next;
        }
        S_ISDIR($l[2]) or die "$path: $c is not a directory\n";
        $fixed &&= fixed_entry(\@l);
        chdir($c) or die "$path: $c: $!\n";
        my @s = stat(".") or die "$path: $c: $!\n";
        ($s[0] == $l[0] && $s[1] == $l[1]) or die "$path: $c changed while fsfleet was entering it\n";
    }
    opendir(my $dh, ".") or die "$path: $!\n";
    return $dh;
}

# The directory we are in belongs to one of @$owners (names or uids; unknown names match nobody).
sub owned_by_one_of {
    my ($label, $owners) = @_;
    my @d = stat(".") or die "$label: $!\n";
    my %ok;
    for my $o (@$owners) {
        my $u = $o =~ /^[0-9]+$/ ? $o : (getpwnam($o))[2];
        $ok{$u} = 1 if defined $u;
    }
    $ok{ $d[4] } or die "$label is owned by uid $d[4], not by " . join(' or ', @$owners) . "; fsfleet will not work in it\n";
}

# A default ACL on the directory gives a new file named-user entries that fchmod's group bits
# would open: remove the file's access ACL (x86_64 and aarch64 syscall numbers; elsewhere the
# audit's FS-CRED-05 still reports a `+` mode).
my %FREMOVEXATTR = (x86_64 => 199, aarch64 => 16);
sub drop_acl {
    my ($fh) = @_;
    my ($arch) = (POSIX::uname())[4];
    my $nr = $FREMOVEXATTR{$arch} or return;
    my $name = "system.posix_acl_access";
    syscall($nr, fileno($fh), $name) == 0 and return;
    # ENODATA (no ACL) and EOPNOTSUPP (no ACLs on this filesystem) are the normal answers.
    return if $!{ENODATA} || $!{EOPNOTSUPP};
    die "removing the ACL of the new file: $!\n";
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
        ($f[4] =~ /^[0-7]{1,4}$/ && $f[5] =~ /^[0-9]{1,9}$/ && $f[6] =~ /^[A-Za-z0-9]{1,32}$/)
          or fail(2, "bad write line; nothing was changed");
        my %op = (kind => 'W', path => $f[1], user => $f[2], group => $f[3], mode => oct($f[4]), token => $f[6]);
        $op{data} = readn($f[5]);
        push @ops, \%op;
    } elsif ($f[0] eq 'C' && @f == 4) {
        $f[2] =~ /^[0-7]{1,4}$/ or fail(2, "bad create line; nothing was changed");
        push @ops, { kind => 'C', path => $f[1], mode => oct($f[2]), owners => [split /,/, $f[3]] };
    } elsif ($f[0] eq 'K' && @f == 3) {
        push @ops, { kind => 'K', path => $f[1], owners => [split /,/, $f[2]] };
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
        if ($op->{kind} eq 'K') {
            # A directory fsfleet works in must exist and belong to root or FreeSWITCH's user.
            $op->{dir} = enter($op->{path});
            owned_by_one_of($op->{path}, $op->{owners});
            return 1;
        }
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
            owned_by_one_of($d, $op->{owners});
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
            # chown first: it would clear set-id bits that chmod set.
            chown($uid, $gid, $fh) or die "$op->{path}: fchown: $!\n";
            chmod($op->{mode}, $fh) or die "$op->{path}: fchmod: $!\n";
            drop_acl($fh);
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
    chdir($op->{dir}) or do { $err = "$op->{path}: $!"; last };
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

# Phase 2: put everything in place; a hangup now must not stop half way. The first rename
# that fails (the directory's owner can make one fail) stops the batch: what was written is
# listed, the rest is left as it was and its stage files removed, exit 4 ("partial").
$SIG{$_} = 'IGNORE' for qw(HUP PIPE INT TERM);
my $bad = 0;
for my $op (@ops) {
    my $p = $op->{path};
    if ($bad) {
        if ($op->{stage} && chdir($op->{dir})) {
            my @s = lstat($op->{stage});
            unlink($op->{stage}) if @s && $s[0] == $op->{ino}[0] && $s[1] == $op->{ino}[1];
        }
        next;
    }
    next if $op->{kind} eq 'K';
    if (!chdir($op->{dir})) { print STDERR "$p: $!\n"; $bad = 1; next; }
    if ($op->{kind} eq 'W') {
        if (rename($op->{stage}, $op->{base})) {
            # The directory's owner can swap the stage name between the check above and the
            # rename: then what landed is not ours. Say so; never claim it was written.
            my @n = lstat($op->{base});
            unless (@n && $n[0] == $op->{ino}[0] && $n[1] == $op->{ino}[1]) {
                print STDERR "$p: the stage file was replaced by someone else during the rename; what is there now is not fsfleet's\n";
                $bad = 1;
                next;
            }
            print "written $p\n";
            # The rename itself is durable once the directory is.
            if (sysopen(my $dfh, ".", Fcntl::O_RDONLY())) { $dfh->sync; close($dfh); }
        } else {
            print STDERR "$p: rename: $!\n";
            my @s = lstat($op->{stage});
            unlink($op->{stage}) if @s && $s[0] == $op->{ino}[0] && $s[1] == $op->{ino}[1];
            $bad = 1;
        }
    } elsif ($op->{kind} eq 'C') {
        if (sysopen(my $fh, $op->{base}, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600)) {
            my @d = stat(".");
            if (chown($d[4], $d[5], $fh) && chmod($op->{mode}, $fh)) { print "created $p\n"; }
            else { print STDERR "$p: $!\n"; $bad = 1; }
            close($fh);
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
